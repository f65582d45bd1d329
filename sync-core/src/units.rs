//! Org units keyed by (scheme, code), loaded from the reference data shipped in `data/`.
//!
//! Why (scheme, code) and never a bare code: codes were reused across the 2025 reform
//! (03434 was Thị trấn Nậm Nhùn and is now Xã Nậm Hàng). The tree is compiled into the
//! binary so a device and the server agree on it with no network and no file to misplace.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// Which administrative structure a unit code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scheme {
    /// The two-level structure in force since 1 July 2025 (province -> commune).
    S2025,
    /// The three-level structure before July 2025 (province -> district -> commune).
    Legacy,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::S2025 => "2025",
            Scheme::Legacy => "legacy",
        }
    }
}

/// The identity of an org unit: `2025:03434`, `legacy:112`, `2025:12`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitKey {
    pub scheme: Scheme,
    pub code: String,
}

impl UnitKey {
    pub fn new(scheme: Scheme, code: impl Into<String>) -> Self {
        UnitKey {
            scheme,
            code: code.into(),
        }
    }
}

impl fmt::Display for UnitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme.as_str(), self.code)
    }
}

impl FromStr for UnitKey {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidInput::new(format!("unit `{s}` is not of the form 2025:CODE or legacy:CODE"));
        let (scheme, code) = s.split_once(':').ok_or_else(bad)?;
        let scheme = match scheme {
            "2025" => Scheme::S2025,
            "legacy" => Scheme::Legacy,
            _ => return Err(bad()),
        };
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(UnitKey::new(scheme, code))
    }
}

impl Serialize for UnitKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UnitKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What level of the tree a unit sits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Province,
    District,
    Commune,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    pub key: UnitKey,
    pub name: String,
    pub level: Level,
    pub parent: Option<UnitKey>,
}

/// The whole reference tree, both schemes.
#[derive(Debug)]
pub struct UnitTree {
    units: HashMap<UnitKey, Unit>,
    children: HashMap<UnitKey, Vec<UnitKey>>,
    /// legacy commune -> (2025 commune, whole, default successor)
    legacy_to_2025: HashMap<String, Vec<(String, bool, bool)>>,
    /// 2025 commune -> the legacy communes that went (wholly or partly) into it.
    from_legacy: HashMap<String, Vec<String>>,
    mapping_rows: usize,
    /// 2025 commune -> the one legacy commune its figures are counted under in a
    /// legacy-scheme report (see [`UnitTree::legacy_home`]).
    legacy_home: HashMap<String, String>,
}

const UNITS_2025: &str = include_str!("../../data/vn-admin-units/units_2025.csv");
const UNITS_LEGACY: &str = include_str!("../../data/vn-admin-units/units_legacy.csv");
const LEGACY_TO_2025: &str = include_str!("../../data/vn-admin-units/legacy_to_2025.csv");

impl UnitTree {
    /// The tree compiled into the binary, parsed once per process.
    pub fn reference() -> &'static UnitTree {
        static TREE: OnceLock<UnitTree> = OnceLock::new();
        TREE.get_or_init(|| Self::parse(UNITS_2025, UNITS_LEGACY, LEGACY_TO_2025))
    }

    fn parse(units_2025: &str, units_legacy: &str, mapping: &str) -> UnitTree {
        let mut tree = UnitTree {
            units: HashMap::new(),
            children: HashMap::new(),
            legacy_to_2025: HashMap::new(),
            from_legacy: HashMap::new(),
            mapping_rows: 0,
            legacy_home: HashMap::new(),
        };
        // The CSV files ship inside the binary and are checked by tests, so a
        // malformed row is skipped rather than turned into a run-time failure.
        for rec in csv::Reader::from_reader(units_2025.as_bytes()).records().flatten() {
            let (pcode, pname, ccode, cname) = (&rec[0], &rec[1], &rec[2], &rec[3]);
            let province = UnitKey::new(Scheme::S2025, pcode);
            tree.add(province.clone(), pname, Level::Province, None);
            tree.add(
                UnitKey::new(Scheme::S2025, ccode),
                cname,
                Level::Commune,
                Some(province),
            );
        }
        for rec in csv::Reader::from_reader(units_legacy.as_bytes()).records().flatten() {
            let province = UnitKey::new(Scheme::Legacy, &rec[0]);
            let district = UnitKey::new(Scheme::Legacy, &rec[2]);
            tree.add(province.clone(), &rec[1], Level::Province, None);
            tree.add(district.clone(), &rec[3], Level::District, Some(province));
            // Five island districts (Bạch Long Vĩ, Cồn Cỏ, Hoàng Sa, Lý Sơn, Côn Đảo) had
            // no commune level: their row has an empty commune code.
            if rec[5].is_empty() {
                continue;
            }
            tree.add(
                UnitKey::new(Scheme::Legacy, &rec[5]),
                &rec[6],
                Level::Commune,
                Some(district),
            );
        }
        for rec in csv::Reader::from_reader(mapping.as_bytes()).records().flatten() {
            tree.legacy_to_2025.entry(rec[0].to_string()).or_default().push((
                rec[1].to_string(),
                &rec[2] == "1",
                &rec[3] == "1",
            ));
            tree.from_legacy
                .entry(rec[1].to_string())
                .or_default()
                .push(rec[0].to_string());
            tree.mapping_rows += 1;
        }
        // Each 2025 commune is counted under exactly one legacy commune, so legacy-scheme
        // totals never count a course twice: the predecessor that kept the code, else the
        // lowest-coded default successor link, else the lowest-coded link at all.
        let mut homes: HashMap<String, (u8, String)> = HashMap::new();
        for (legacy, succ) in &tree.legacy_to_2025 {
            for (code, _, default) in succ {
                let rank = if legacy == code {
                    0
                } else if *default {
                    1
                } else {
                    2
                };
                let cand = (rank, legacy.clone());
                let e = homes.entry(code.clone()).or_insert_with(|| cand.clone());
                if cand < *e {
                    *e = cand;
                }
            }
        }
        tree.legacy_home = homes.into_iter().map(|(k, (_, v))| (k, v)).collect();
        tree
    }

    /// The legacy commune a 2025 commune's figures are counted under in a legacy-scheme
    /// report (one, so nothing is counted twice when a commune was formed from several).
    pub fn legacy_home(&self, code_2025: &str) -> Option<UnitKey> {
        self.legacy_home
            .get(code_2025)
            .map(|c| UnitKey::new(Scheme::Legacy, c.clone()))
    }

    /// Does a report on `root` count data recorded under `unit`? Within the same scheme,
    /// the subtree; a legacy unit counts in the 2025 unit it became part of
    /// ([`UnitTree::is_within`]); a 2025 commune counts in the legacy units above its
    /// [`UnitTree::legacy_home`].
    pub fn counts_in(&self, unit: &UnitKey, root: &UnitKey) -> bool {
        if self.is_within(unit, root) {
            return true;
        }
        if unit.scheme == Scheme::S2025 && root.scheme == Scheme::Legacy {
            if let Some(home) = self.legacy_home(&unit.code) {
                return &home == root || self.ancestors(&home).contains(root);
            }
        }
        false
    }

    fn add(&mut self, key: UnitKey, name: &str, level: Level, parent: Option<UnitKey>) {
        if self.units.contains_key(&key) {
            return;
        }
        if let Some(p) = &parent {
            self.children.entry(p.clone()).or_default().push(key.clone());
        }
        self.units.insert(
            key.clone(),
            Unit {
                key,
                name: name.to_string(),
                level,
                parent,
            },
        );
    }

    pub fn get(&self, key: &UnitKey) -> Option<&Unit> {
        self.units.get(key)
    }

    /// Parses and checks that the unit exists.
    pub fn resolve(&self, s: &str) -> Result<&Unit, InvalidInput> {
        let key: UnitKey = s.parse()?;
        self.get(&key)
            .ok_or_else(|| InvalidInput::new(format!("unit `{s}` is not in the reference list")))
    }

    pub fn children(&self, key: &UnitKey) -> &[UnitKey] {
        self.children.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn ancestors(&self, key: &UnitKey) -> Vec<UnitKey> {
        let mut out = Vec::new();
        let mut cur = self.units.get(key).and_then(|u| u.parent.clone());
        // The tree has at most three levels; the bound guards against a cycle.
        for _ in 0..8 {
            let Some(k) = cur else { break };
            cur = self.units.get(&k).and_then(|u| u.parent.clone());
            out.push(k);
        }
        out
    }

    /// Is `unit` equal to `root` or below it? Across the 2025 reform: a legacy commune
    /// counts as inside the 2025 commune (and province) it became part of, so a
    /// 2025-scoped device keeps seeing data recorded under the old code; and a 2025
    /// commune counts as inside a legacy unit one of whose communes went into it, so a
    /// device enrolled for a legacy commune keeps syncing after the reform is applied.
    /// [`UnitTree::scope`] lists the same units.
    pub fn is_within(&self, unit: &UnitKey, root: &UnitKey) -> bool {
        if self.is_within_scheme(unit, root) {
            return true;
        }
        match (unit.scheme, root.scheme) {
            (Scheme::Legacy, Scheme::S2025) => self
                .successors(unit)
                .iter()
                .any(|(k, _, _)| self.is_within_scheme(k, root)),
            (Scheme::S2025, Scheme::Legacy) => self.predecessors(unit).iter().any(|k| self.is_within_scheme(k, root)),
            _ => false,
        }
    }

    fn is_within_scheme(&self, unit: &UnitKey, root: &UnitKey) -> bool {
        unit == root || self.ancestors(unit).contains(root)
    }

    /// The 2025 communes a legacy commune went into: (commune, whole, default successor).
    pub fn successors(&self, legacy: &UnitKey) -> Vec<(UnitKey, bool, bool)> {
        if legacy.scheme != Scheme::Legacy {
            return Vec::new();
        }
        self.legacy_to_2025
            .get(&legacy.code)
            .map(|v| {
                v.iter()
                    .map(|(c, whole, default)| (UnitKey::new(Scheme::S2025, c.clone()), *whole, *default))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one 2025 commune that takes over a legacy commune's roster: the successor
    /// marked `default` (the main one when the commune was split), else the only one.
    pub fn default_successor(&self, legacy: &UnitKey) -> Option<UnitKey> {
        let s = self.successors(legacy);
        s.iter()
            .find(|(_, _, d)| *d)
            .or_else(|| s.iter().find(|(_, w, _)| *w))
            .or(s.first())
            .map(|(k, _, _)| k.clone())
    }

    /// The legacy communes that went, wholly or partly, into a 2025 commune.
    pub fn predecessors(&self, commune: &UnitKey) -> Vec<UnitKey> {
        if commune.scheme != Scheme::S2025 {
            return Vec::new();
        }
        let mut v: Vec<UnitKey> = self
            .from_legacy
            .get(&commune.code)
            .map(|v| v.iter().map(|c| UnitKey::new(Scheme::Legacy, c.clone())).collect())
            .unwrap_or_default();
        v.sort();
        v.dedup();
        v
    }

    /// Every unit whose documents a device enrolled for `root` reads and writes: the
    /// subtree, plus the other scheme's communes [`UnitTree::is_within`] counts inside.
    pub fn scope(&self, root: &UnitKey) -> Vec<UnitKey> {
        let mut out = self.subtree(root);
        let mut extra = Vec::new();
        for u in &out {
            match u.scheme {
                Scheme::S2025 => extra.extend(self.predecessors(u)),
                Scheme::Legacy => extra.extend(self.successors(u).into_iter().map(|(k, _, _)| k)),
            }
        }
        extra.sort();
        extra.dedup();
        out.extend(extra.into_iter().filter(|k| k != root));
        let mut seen = std::collections::HashSet::new();
        out.retain(|k| seen.insert(k.clone()));
        out
    }

    /// The commune of the other scheme that stands for `unit` when grouping: a legacy
    /// commune's default successor; for a 2025 commune, the predecessor with the same
    /// code when there is one (codes were kept for the main part), else the first
    /// predecessor whose default successor it is.
    pub fn counterpart(&self, unit: &UnitKey) -> Option<UnitKey> {
        match unit.scheme {
            Scheme::Legacy => self.default_successor(unit),
            Scheme::S2025 => {
                let preds = self.predecessors(unit);
                preds
                    .iter()
                    .find(|p| p.code == unit.code)
                    .or_else(|| preds.iter().find(|p| self.default_successor(p).as_ref() == Some(unit)))
                    .or(preds.first())
                    .cloned()
            }
        }
    }

    /// The units `unit` belongs to in `scheme`, nearest first, for reports that group
    /// by either structure: in its own scheme its ancestors; in the other scheme its
    /// [`UnitTree::counterpart`] and that unit's ancestors (empty for a province or
    /// district, which have no single counterpart).
    pub fn ancestors_in(&self, unit: &UnitKey, scheme: Scheme) -> Vec<UnitKey> {
        if unit.scheme == scheme {
            return self.ancestors(unit);
        }
        if self.get(unit).map(|u| u.level) != Some(Level::Commune) {
            return Vec::new();
        }
        match self.counterpart(unit) {
            Some(c) => {
                let mut v = vec![c.clone()];
                v.extend(self.ancestors(&c));
                v
            }
            None => Vec::new(),
        }
    }

    /// The unit `unit` is grouped under at `level` of `scheme` (itself when it is at
    /// that level): `group_at(legacy:03475, S2025, Province)` is `2025:12`.
    pub fn group_at(&self, unit: &UnitKey, scheme: Scheme, level: Level) -> Option<UnitKey> {
        if unit.scheme == scheme && self.get(unit).map(|u| u.level) == Some(level) {
            return Some(unit.clone());
        }
        self.ancestors_in(unit, scheme)
            .into_iter()
            .find(|k| self.get(k).map(|u| u.level) == Some(level))
    }

    /// Every unit of the subtree rooted at `root`, `root` included (same scheme only).
    pub fn subtree(&self, root: &UnitKey) -> Vec<UnitKey> {
        let mut out = vec![root.clone()];
        let mut i = 0;
        while i < out.len() {
            out.extend(self.children(&out[i]).iter().cloned());
            i += 1;
        }
        out
    }

    /// The provinces of a scheme, in code order.
    pub fn roots(&self, scheme: Scheme) -> Vec<UnitKey> {
        let mut v: Vec<UnitKey> = self
            .units
            .values()
            .filter(|u| u.key.scheme == scheme && u.parent.is_none())
            .map(|u| u.key.clone())
            .collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

/// The 54 ethnic groups of Vietnam (code, name), from the statistics office list.
pub fn ethnic_groups() -> &'static [(String, String)] {
    static GROUPS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    GROUPS.get_or_init(|| {
        csv::Reader::from_reader(include_str!("../../data/ethnic_groups.csv").as_bytes())
            .records()
            .flatten()
            .map(|r| (r[0].to_string(), r[1].to_string()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_tree_has_every_unit_of_both_schemes() {
        let t = UnitTree::reference();
        let communes_2025 = t
            .units
            .values()
            .filter(|u| u.key.scheme == Scheme::S2025 && u.level == Level::Commune)
            .count();
        assert_eq!(communes_2025, 3321);
        let provinces = t
            .units
            .values()
            .filter(|u| u.key.scheme == Scheme::S2025 && u.level == Level::Province)
            .count();
        assert_eq!(provinces, 34);
        let nam_hang = t.resolve("2025:03434").expect("Nậm Hàng exists");
        assert_eq!(nam_hang.name, "Xã Nậm Hàng");
        let province = UnitKey::new(Scheme::S2025, "12");
        assert!(t.is_within(&nam_hang.key, &province));
        assert!(!t.is_within(&province, &nam_hang.key));
        // Thị trấn Nậm Nhùn (legacy 03434) is now part of Xã Nậm Hàng.
        assert!(t.is_within(&UnitKey::new(Scheme::Legacy, "03434"), &nam_hang.key));
        assert!(t.resolve("2025:99999").is_err());
        // Xã Nậm Hàng (2025) is counted under TT Nậm Nhùn, whose code it kept, hence in
        // the former Nậm Nhùn district (legacy 112) and Lai Châu (legacy 12), once.
        assert_eq!(t.legacy_home("03434"), Some(UnitKey::new(Scheme::Legacy, "03434")));
        assert!(t.counts_in(&nam_hang.key, &UnitKey::new(Scheme::Legacy, "112")));
        assert!(t.counts_in(&nam_hang.key, &UnitKey::new(Scheme::Legacy, "12")));
        assert!(!t.counts_in(&nam_hang.key, &UnitKey::new(Scheme::Legacy, "01")));
        assert!("03434".parse::<UnitKey>().is_err());
        assert_eq!(ethnic_groups().len(), 54);
    }

    #[test]
    fn the_counts_of_the_reference_data_are_the_shipped_ones() {
        let t = UnitTree::reference();
        let legacy_communes = t
            .units
            .values()
            .filter(|u| u.key.scheme == Scheme::Legacy && u.level == Level::Commune)
            .count();
        // 10,040 rows: 10,035 communes and 5 island districts with no commune level.
        assert_eq!(legacy_communes, 10_035);
        assert!(t.units.keys().all(|k| !k.code.is_empty()));
        let island = t.get(&UnitKey::new(Scheme::Legacy, "318")).expect("Bạch Long Vĩ");
        assert_eq!(island.level, Level::District);
        assert!(t.children(&island.key).is_empty());
        assert_eq!(t.mapping_rows, 10_597);
        // Every legacy commune has a successor; every 2025 commune a predecessor but the
        // five island special zones (đặc khu), made from the commune-less island districts.
        let mut orphans = Vec::new();
        for u in t.units.values().filter(|u| u.level == Level::Commune) {
            match u.key.scheme {
                Scheme::Legacy => assert!(t.default_successor(&u.key).is_some(), "{}", u.key),
                Scheme::S2025 if t.predecessors(&u.key).is_empty() => orphans.push(u.name.clone()),
                Scheme::S2025 => {}
            }
        }
        assert_eq!(orphans.len(), 5, "{orphans:?}");
        assert!(orphans.iter().all(|n| n.starts_with("Đặc khu")), "{orphans:?}");
    }

    #[test]
    fn the_nam_nhun_communes_map_across_the_reform_both_ways() {
        let t = UnitTree::reference();
        let k = |s: &str| s.parse::<UnitKey>().expect("unit");
        // The 11 legacy units of Nậm Nhùn went into the 5 communes of 2025.
        let district = k("legacy:112");
        let legacy: Vec<UnitKey> = t.children(&district).to_vec();
        assert_eq!(legacy.len(), 11);
        let mut new: Vec<String> = legacy
            .iter()
            .filter_map(|l| t.default_successor(l))
            .map(|u| u.code)
            .collect();
        new.sort();
        new.dedup();
        assert_eq!(new, vec!["03434", "03460", "03472", "03487", "03503"]);
        // A device of legacy Nậm Manh (03474) may write Nậm Hàng's 2025 roster, and a
        // device of 2025 Nậm Hàng sees the legacy documents.
        let nam_manh = k("legacy:03474");
        let nam_hang = t.default_successor(&nam_manh).expect("successor");
        assert!(t.is_within(&nam_hang, &nam_manh));
        assert!(t.is_within(&nam_manh, &nam_hang));
        assert!(t.scope(&nam_manh).contains(&nam_hang));
        assert!(t.scope(&nam_hang).contains(&nam_manh));
        assert!(!t.is_within(&k("2025:03460"), &nam_manh), "Hua Bum is another commune");
        for u in t.scope(&k("2025:12")) {
            assert!(t.is_within(&u, &k("2025:12")), "{u}");
        }
        // Grouping by either structure.
        assert_eq!(
            t.group_at(&nam_manh, Scheme::S2025, Level::Province),
            Some(k("2025:12"))
        );
        assert_eq!(
            t.group_at(&nam_manh, Scheme::Legacy, Level::District),
            Some(district.clone())
        );
        assert_eq!(
            t.group_at(&k("2025:03434"), Scheme::Legacy, Level::District),
            Some(district)
        );
        assert_eq!(t.counterpart(&k("2025:03434")), Some(k("legacy:03434")));
        assert_eq!(t.ancestors_in(&k("2025:12"), Scheme::Legacy), vec![]);
    }
}
