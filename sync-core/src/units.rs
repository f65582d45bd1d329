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
        }
        tree
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

    /// Is `unit` equal to `root` or below it? A legacy commune also counts as inside
    /// the 2025 commune (and province) it became part of, so a 2025-scoped device keeps
    /// seeing data recorded under the old code.
    pub fn is_within(&self, unit: &UnitKey, root: &UnitKey) -> bool {
        if unit == root || self.ancestors(unit).contains(root) {
            return true;
        }
        if unit.scheme == Scheme::Legacy && root.scheme == Scheme::S2025 {
            if let Some(succ) = self.legacy_to_2025.get(&unit.code) {
                return succ.iter().any(|(code, _, _)| {
                    let k = UnitKey::new(Scheme::S2025, code.clone());
                    &k == root || self.ancestors(&k).contains(root)
                });
            }
        }
        false
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
        assert!("03434".parse::<UnitKey>().is_err());
        assert_eq!(ethnic_groups().len(), 54);
    }
}
