//! Server-rendered pages for the province and district organisers: small, no external
//! assets, readable on a slow link. Vietnamese first.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sync_core::report::CourseReport;
use sync_core::units::UnitTree;

use crate::api::{ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/courses/{id}", get(course_page))
        .route("/api/courses/{id}", get(course_json))
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"vi\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} — diemdanh</title><style>\
body{{font-family:system-ui,sans-serif;margin:1rem;color:#111;max-width:80rem}}\
table{{border-collapse:collapse;font-size:.9rem}}td,th{{border:1px solid #999;padding:.2rem .4rem;text-align:left}}\
th{{background:#eee}}.present{{background:#d4f4d4}}.late{{background:#fff3c4}}.left_early{{background:#fde2c4}}\
.excused{{background:#dde6ff}}.absent{{background:#f8d0d0}}.conflict{{outline:3px solid #c00}}a{{color:#0645ad}}\
</style></head><body><header><a href=\"/\">diemdanh</a> · Điểm danh lớp bồi dưỡng cán bộ, công chức cấp xã</header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    ))
}

fn unit_name(unit: &str) -> String {
    UnitTree::reference()
        .resolve(unit)
        .map(|u| u.name.clone())
        .unwrap_or_else(|_| unit.to_string())
}

async fn overview(State(st): State<AppState>) -> Result<Html<String>, ApiError> {
    let store = st.store.clone();
    let (counts, courses, refusals) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        Ok((store.counts()?, store.courses()?, store.refusals()?))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "page failed"))??;
    let mut body = String::from("<h2>Tổng quan</h2><table><tr>");
    for (k, _) in &counts {
        body.push_str(&format!("<th>{}</th>", esc(k)));
    }
    body.push_str("</tr><tr>");
    for (_, v) in &counts {
        body.push_str(&format!("<td>{v}</td>"));
    }
    body.push_str("</tr></table><h2>Lớp học (courses)</h2><table><tr><th>Đơn vị</th><th>Lớp</th><th>Buổi</th><th>Học viên</th><th>Điểm danh</th><th>Xung đột</th></tr>");
    for c in &courses {
        body.push_str(&format!(
            "<tr><td>{}</td><td><a href=\"/courses/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&unit_name(&c.unit)),
            esc(&c.id),
            esc(&c.title),
            c.sessions,
            c.trainees,
            c.marks,
            c.conflicts
        ));
    }
    body.push_str("</table><h2>Dữ liệu bị từ chối (refused batches)</h2><table><tr><th>Thiết bị</th><th>Tài liệu</th><th>Lý do</th></tr>");
    for r in refusals.iter().take(50) {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.device_id),
            esc(&r.doc_id),
            esc(&r.reason)
        ));
    }
    body.push_str("</table>");
    Ok(page("Tổng quan điểm danh", &body))
}

fn load_report(st: &AppState, id: String) -> Result<CourseReport, ApiError> {
    let rows = st.store.course_rows(&id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("course {id} is not on this server"),
        )
    })?;
    Ok(CourseReport::assemble(rows))
}

async fn course_json(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<CourseReport>, ApiError> {
    let r = tokio::task::spawn_blocking(move || load_report(&st, id))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "report failed"))??;
    Ok(Json(r))
}

async fn course_page(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let r = tokio::task::spawn_blocking(move || load_report(&st, id))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "report failed"))??;
    let mut body = format!(
        "<p>{} · ngưỡng chuyên cần {}% · {} buổi · {} học viên · {} xung đột</p><table><tr><th>Học viên</th>",
        esc(&unit_name(&r.unit)),
        (r.min_ratio * 100.0).round(),
        r.sessions.len(),
        r.trainees.len(),
        r.conflicts.len()
    );
    for s in &r.sessions {
        body.push_str(&format!(
            "<th title=\"{}\">{}</th>",
            esc(&s.id),
            esc(s.date.get(5..).unwrap_or(&s.date))
        ));
    }
    body.push_str("<th>Tỷ lệ</th><th>Hoàn thành</th></tr>");
    let marks: std::collections::HashMap<(&str, &str), &str> = r
        .marks
        .iter()
        .map(|m| ((m.session.as_str(), m.cadre.as_str()), m.status.as_str()))
        .collect();
    let conflicts: std::collections::HashSet<(&str, &str)> = r
        .conflicts
        .iter()
        .map(|c| (c.session.as_str(), c.cadre.as_str()))
        .collect();
    for (t, c) in r.trainees.iter().zip(&r.completion) {
        body.push_str(&format!("<tr><td>{}</td>", esc(t.name.as_deref().unwrap_or(&t.id))));
        for s in &r.sessions {
            let k = (s.id.as_str(), t.id.as_str());
            let st = marks.get(&k).copied().unwrap_or("");
            let short = match st {
                "present" => "✓",
                "late" => "M",
                "left_early" => "V",
                "excused" => "P",
                "absent" => "✗",
                _ => "",
            };
            let cls = if conflicts.contains(&k) {
                format!("{st} conflict")
            } else {
                st.to_string()
            };
            body.push_str(&format!("<td class=\"{cls}\" title=\"{st}\">{short}</td>"));
        }
        body.push_str(&format!(
            "<td>{:.0}%</td><td>{}</td></tr>",
            c.ratio * 100.0,
            if c.completed { "Đạt" } else { "Chưa đạt" }
        ));
    }
    body.push_str("</table><p>✓ có mặt · M muộn · V về sớm · P vắng có phép · ✗ vắng</p>");
    Ok(page(&r.title, &body).into_response())
}
