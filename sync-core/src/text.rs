//! Vietnamese text: names are kept in Unicode NFC so the same name typed on two
//! keyboards (precomposed or combining marks) is the same string everywhere.

use unicode_normalization::UnicodeNormalization;

/// Trims, collapses inner white space and normalises to NFC.
pub fn normalize_name(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_marks_become_precomposed() {
        let decomposed = "Lo\u{300} Thi\u{323} Hoa";
        assert_eq!(normalize_name(&format!("  {decomposed}  ")), "Lò Thị Hoa");
    }
}
