//! What a mode shows of itself on the status pages: named fields
//! ([`Fields`]) that the JSON page writes as they are, and the Prometheus
//! families ([`Metric`]) that read them. A mode declares both; the pages
//! never look at which mode they show.

use serde::ser::{SerializeMap, Serializer};

use crate::resources::{Res, RESOURCES};

/// One value a mode shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Field {
    /// A number (NaN: unknown, written as null).
    Number(f64),
    /// A count.
    Count(u64),
    /// An in-flight limit: 0 means none and is written as null.
    Limit(u64),
    /// A value per resource (`{"cpu":..,"mem":..,"net":..,"disk":..}`).
    Resources(Res),
    /// A value per resource, or null when there is none at all.
    MaybeResources(Option<Res>),
}

impl Field {
    /// The number a Prometheus sample shows of the field, or of its
    /// resource `j` (NaN: no sample).
    pub fn value(&self, resource: Option<usize>) -> f64 {
        match (self, resource) {
            (Field::Number(x), None) => *x,
            (Field::Count(n), None) => *n as f64,
            (Field::Limit(0), None) => f64::NAN,
            (Field::Limit(n), None) => *n as f64,
            (Field::Resources(r), Some(j)) | (Field::MaybeResources(Some(r)), Some(j)) => {
                r.get(j).copied().unwrap_or(f64::NAN)
            }
            _ => f64::NAN,
        }
    }
}

impl serde::Serialize for Field {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Number(x) => s.serialize_f64(*x),
            Field::Count(n) => s.serialize_u64(*n),
            Field::Limit(0) | Field::MaybeResources(None) => s.serialize_none(),
            Field::Limit(n) => s.serialize_u64(*n),
            Field::Resources(r) | Field::MaybeResources(Some(r)) => {
                let mut m = s.serialize_map(Some(RESOURCES.len()))?;
                for (name, x) in RESOURCES.iter().zip(r) {
                    m.serialize_entry(name, x)?;
                }
                m.end()
            }
        }
    }
}

/// A mode's fields of an upstream or of one peer, in the order they are
/// written. Serialised as map entries (flattened into the object that
/// holds them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fields(pub Vec<(&'static str, Field)>);

impl Fields {
    /// The field named `name`, if the mode shows one.
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, f)| f)
    }
}

impl serde::Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, f) in &self.0 {
            m.serialize_entry(name, f)?;
        }
        m.end()
    }
}

/// Whose fields a metric reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Upstream,
    Peer,
}

/// Which part of a field a metric shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The field's number.
    Whole,
    /// One resource of a per-resource field.
    Resource(usize),
    /// Every resource, labelled `resource="cpu"` etc.
    EachResource,
}

/// A Prometheus family that shows a mode's field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metric {
    pub scope: Scope,
    /// The field it reads.
    pub field: &'static str,
    pub part: Part,
    /// Multiplied into the value (to base units: 1024 for KB, ...).
    pub scale: f64,
    pub name: &'static str,
    /// "gauge" or "counter".
    pub kind: &'static str,
    pub help: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_serialise_flat_and_give_their_numbers() {
        let f = Fields(vec![
            ("share", Field::Number(0.25)),
            ("limit", Field::Limit(0)),
            ("bg", Field::Resources([1.0, f64::NAN, 2.0, 3.0])),
            ("w", Field::MaybeResources(None)),
            ("v", Field::Count(4)),
        ]);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"share": 0.25, "limit": null,
                "bg": {"cpu": 1.0, "mem": null, "net": 2.0, "disk": 3.0}, "w": null, "v": 4})
        );
        assert!(f.get("limit").unwrap().value(None).is_nan());
        assert_eq!(f.get("bg").unwrap().value(Some(2)), 2.0);
        assert_eq!(f.get("v").unwrap().value(None), 4.0);
        assert!(f.get("w").unwrap().value(Some(0)).is_nan());
        assert!(f.get("none").is_none());
    }
}
