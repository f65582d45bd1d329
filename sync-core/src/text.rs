//! Vietnamese text: names kept in Unicode NFC, a collation key for sorting lists the
//! way a Vietnamese reader expects, and an accent- and case-blind form for search and
//! for matching spreadsheet headers and values.
//!
//! Why hand-written: the Vietnamese order is a small fixed rule (the alphabet
//! a ă â b c d đ e ê g h i k l m n o ô ơ p q r s t u ư v x y, tones as a secondary
//! difference after the letters: none, huyền, hỏi, ngã, sắc, nặng, as in CLDR's `vi`
//! tailoring), while `icu_collator` brings about 30 crates and a data blob into the
//! tablet library for this one language (checked 2026-12-01).

use std::cmp::Ordering;

use unicode_normalization::UnicodeNormalization;

/// Trims, collapses inner white space and normalises to NFC.
pub fn normalize_name(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").nfc().collect()
}

const BREVE: char = '\u{306}';
const CIRCUMFLEX: char = '\u{302}';
const HORN: char = '\u{31B}';

/// The tone of a combining mark: 1 huyền, 2 hỏi, 3 ngã, 4 sắc, 5 nặng.
fn tone(c: char) -> Option<u16> {
    match c {
        '\u{300}' => Some(1),
        '\u{309}' => Some(2),
        '\u{303}' => Some(3),
        '\u{301}' => Some(4),
        '\u{323}' => Some(5),
        _ => None,
    }
}

/// Lower-cases and removes every accent and tone (đ becomes d), collapsing white
/// space: "  Lò  Thị HOA " and "lo thi hoa" fold to the same string.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.nfd() {
            match c {
                'đ' | 'Đ' => out.push('d'),
                c if unicode_normalization::char::is_combining_mark(c) => {}
                c => out.extend(c.to_lowercase()),
            }
        }
    }
    out
}

/// [`fold`] with everything but letters and digits removed: for matching headers and
/// coded values ("Họ và tên", "HO VA TEN", "ho_va_ten" are all "hovaten";
/// "H'Mông" and "HMông" are "hmong").
pub fn fold_compact(s: &str) -> String {
    fold(s).chars().filter(|c| c.is_alphanumeric()).collect()
}

/// Does `text` contain `query`, ignoring case, accents and spacing? An empty query
/// matches everything.
pub fn matches_search(text: &str, query: &str) -> bool {
    fold(text).contains(&fold(query))
}

/// The primary weight of a base letter with its letter-forming marks (not tones).
fn letter_weight(base: char, marks: &[char]) -> u16 {
    let has = |m: char| marks.contains(&m);
    // Each Vietnamese letter gets its own slot; the Latin letters Vietnamese does not
    // use (f, j, w, z) sit where the Latin alphabet puts them.
    let order: u16 = match base {
        'a' if has(BREVE) => 2,
        'a' if has(CIRCUMFLEX) => 3,
        'a' => 1,
        'b' => 4,
        'c' => 5,
        'd' => 6,
        'đ' => 7,
        'e' if has(CIRCUMFLEX) => 9,
        'e' => 8,
        'f' => 10,
        'g' => 11,
        'h' => 12,
        'i' => 13,
        'j' => 14,
        'k' => 15,
        'l' => 16,
        'm' => 17,
        'n' => 18,
        'o' if has(CIRCUMFLEX) => 20,
        'o' if has(HORN) => 21,
        'o' => 19,
        'p' => 22,
        'q' => 23,
        'r' => 24,
        's' => 25,
        't' => 26,
        'u' if has(HORN) => 28,
        'u' => 27,
        'v' => 29,
        'w' => 30,
        'x' => 31,
        'y' => 32,
        'z' => 33,
        '0'..='9' => return 40 + (base as u16 - '0' as u16),
        _ => return 100u16.saturating_add(base as u16 % 60_000),
    };
    100 + order
}

/// A key whose byte order is the Vietnamese order of `s`: letters first (the
/// alphabet above, case ignored), then tones word by word, then case. Words are
/// compared in turn, so "Lò A" sorts before "Lòa".
pub fn collation_key(s: &str) -> Vec<u16> {
    let mut primary = Vec::new();
    let mut tones = Vec::new();
    let mut case = Vec::new();
    for word in s.split_whitespace() {
        if !primary.is_empty() {
            primary.push(1);
        }
        let mut word_tone = 0;
        let chars: Vec<char> = word.nfd().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let lower = if c == 'Đ' {
                'đ'
            } else {
                c.to_lowercase().next().unwrap_or(c)
            };
            let mut marks = Vec::new();
            let mut j = i + 1;
            while j < chars.len() && unicode_normalization::char::is_combining_mark(chars[j]) {
                match tone(chars[j]) {
                    Some(t) => word_tone = t,
                    None => marks.push(chars[j]),
                }
                j += 1;
            }
            if !unicode_normalization::char::is_combining_mark(c) {
                primary.push(letter_weight(lower, &marks));
                case.push(if lower == c { 1 } else { 2 });
            }
            i = j;
        }
        tones.push(word_tone + 1);
    }
    let mut key = primary;
    key.push(0);
    key.extend(tones);
    key.push(0);
    key.extend(case);
    key
}

/// Compares two strings in Vietnamese order.
pub fn compare(a: &str, b: &str) -> Ordering {
    collation_key(a).cmp(&collation_key(b))
}

/// The sort key of a person's name as Vietnamese lists order them: by the given name
/// (the last word), then by the whole name from the family name on. "Lò Thị Hoa"
/// comes before "Giàng A Páo" because Hoa comes before Páo.
pub fn name_key(name: &str) -> Vec<u16> {
    let given = name.split_whitespace().last().unwrap_or("");
    let mut key = collation_key(given);
    key.push(0);
    key.extend(collation_key(name));
    key
}

/// Compares two names in the order of a Vietnamese list (see [`name_key`]).
pub fn compare_names(a: &str, b: &str) -> Ordering {
    name_key(a).cmp(&name_key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_marks_become_precomposed() {
        let decomposed = "Lo\u{300} Thi\u{323} Hoa";
        assert_eq!(normalize_name(&format!("  {decomposed}  ")), "Lò Thị Hoa");
    }

    #[test]
    fn folding_removes_case_accents_and_spacing() {
        assert_eq!(fold("  Lò  Thị HOA "), "lo thi hoa");
        assert_eq!(fold("Đỗ Văn Định"), "do van dinh");
        assert_eq!(fold("Lo\u{300} Thi\u{323} Hoa"), "lo thi hoa", "decomposed input");
        assert_eq!(fold_compact("Họ và tên"), "hovaten");
        assert_eq!(fold_compact("H'Mông"), fold_compact("HMông"));
        assert!(matches_search("Lò Thị Hoa", "lo thi hoa"));
        assert!(matches_search("Lò Thị Hoa", "THỊ"));
        assert!(matches_search("Đỗ Văn Định", "dinh"));
        assert!(!matches_search("Lò Thị Hoa", "lan"));
        assert!(matches_search("Lò Thị Hoa", ""));
    }

    #[test]
    fn letters_follow_the_vietnamese_alphabet() {
        let mut words = vec![
            "ê", "đa", "y", "ư", "da", "ơ", "ô", "o", "ă", "â", "a", "b", "e", "u", "c",
        ];
        words.sort_by(|a, b| compare(a, b));
        assert_eq!(
            words,
            vec!["a", "ă", "â", "b", "c", "da", "đa", "e", "ê", "o", "ô", "ơ", "u", "ư", "y"]
        );
    }

    #[test]
    fn tones_come_after_letters_in_dictionary_order() {
        // Letters decide first: "anh" before "ánh" before "ba" whatever the tones.
        let mut words = vec!["ba", "ạ", "á", "ã", "ả", "à", "a", "ánh", "anh"];
        words.sort_by(|a, b| compare(a, b));
        assert_eq!(words, vec!["a", "à", "ả", "ã", "á", "ạ", "anh", "ánh", "ba"]);
        // Where the tone mark sits ("hòa" / "hoà") does not matter.
        assert_eq!(compare("Hòa", "Hoà"), Ordering::Equal);
        // Precomposed and decomposed forms are equal.
        assert_eq!(compare("Lò", "Lo\u{300}"), Ordering::Equal);
        // Case is the last difference.
        assert_eq!(compare("an", "An"), Ordering::Less);
        assert_eq!(compare("An", "ăn"), Ordering::Less);
        // Whole words in turn.
        assert_eq!(compare("Lò A", "Lòa"), Ordering::Less);
    }

    #[test]
    fn names_sort_by_given_name_then_family_name() {
        let mut names = vec!["Vàng A Páo", "Lò Thị Hoa", "Đỗ Văn An", "Điêu Thị Hoa", "Chảo Ông Ân"];
        names.sort_by(|a, b| compare_names(a, b));
        assert_eq!(
            names,
            vec!["Đỗ Văn An", "Chảo Ông Ân", "Điêu Thị Hoa", "Lò Thị Hoa", "Vàng A Páo"]
        );
    }
}
