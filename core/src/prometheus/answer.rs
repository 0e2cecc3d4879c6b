//! The answers of Prometheus's query API (`/api/v1/query`), decoded with
//! serde from a body the caller has already capped in size and time:
//! `{"status":"success","data":{"resultType":"vector|matrix|scalar",
//! "result":…}}`, or `{"status":"error","errorType":…,"error":…}`.
//! Values are strings ("NaN", "+Inf" and negatives are read, and dropped by
//! the caller); timestamps are seconds with a fraction.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One series of a vector or matrix result.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Series {
    pub metric: BTreeMap<String, String>,
    /// A vector's one sample.
    #[serde(default)]
    pub value: Option<(f64, String)>,
    /// A matrix's samples.
    #[serde(default)]
    pub values: Vec<(f64, String)>,
}

impl Series {
    /// Its samples as (ms since the epoch, value), whatever the result
    /// type; values that are not finite numbers are left out.
    pub fn points(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.value.iter().chain(&self.values).filter_map(|(t, v)| {
            let x: f64 = v.parse().ok()?;
            (x.is_finite() && t.is_finite() && *t > 0.0).then(|| ((t * 1000.0).round() as u64, x))
        })
    }
}

/// A successful answer's data.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Series(Vec<Series>),
    Scalar(f64, f64),
}

#[derive(Deserialize)]
struct Reply {
    status: String,
    #[serde(default)]
    data: Option<RawData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The data decoded straight into its type (no JSON tree in between:
/// an answer takes a small multiple of its size in memory).
#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum RawData {
    Vector(Vec<Series>),
    Matrix(Vec<Series>),
    Scalar((f64, String)),
    /// A string result (never asked for; refused).
    String(serde::de::IgnoredAny),
}

/// Why an answer is not data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Not the query API's JSON.
    Malformed(String),
    /// Prometheus refused the query (`errorType: error`).
    Refused(String),
}

/// Decodes an answer's body.
pub fn decode(body: &[u8]) -> Result<Data, AnswerError> {
    let r: Reply =
        serde_json::from_slice(body).map_err(|e| AnswerError::Malformed(e.to_string()))?;
    if r.status != "success" {
        let what = format!(
            "{}: {}",
            r.error_type.as_deref().unwrap_or("error"),
            r.error.as_deref().unwrap_or("no reason given")
        );
        return Err(AnswerError::Refused(what.chars().take(300).collect()));
    }
    match r.data {
        None => Err(AnswerError::Malformed("a success without data".into())),
        Some(RawData::Vector(s) | RawData::Matrix(s)) => Ok(Data::Series(s)),
        Some(RawData::Scalar((t, v))) => {
            let v: f64 = v
                .parse()
                .map_err(|_| AnswerError::Malformed(format!("scalar \"{v}\"")))?;
            Ok(Data::Scalar(t, v))
        }
        Some(RawData::String(_)) => Err(AnswerError::Malformed("result type \"string\"".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_matrices_scalars_and_errors() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"m","vm_name":"a"},"value":[1700000000.5,"12"]},
            {"metric":{"__name__":"m","vm_name":"b"},"value":[1700000000.5,"NaN"]}]}}"#;
        let Data::Series(s) = decode(v).unwrap() else {
            panic!()
        };
        assert_eq!(
            s[0].points().collect::<Vec<_>>(),
            vec![(1_700_000_000_500, 12.0)]
        );
        assert_eq!(s[1].points().count(), 0);
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"m"},"values":[[1,"1"],[2,"-3"],[3,"+Inf"]]}]}}"#;
        let Data::Series(s) = decode(m).unwrap() else {
            panic!()
        };
        assert_eq!(
            s[0].points().collect::<Vec<_>>(),
            vec![(1000, 1.0), (2000, -3.0)]
        );
        let t = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.25,"1700000000.25"]}}"#;
        assert_eq!(
            decode(t).unwrap(),
            Data::Scalar(1_700_000_000.25, 1_700_000_000.25)
        );
        let e = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            decode(e).unwrap_err(),
            AnswerError::Refused("bad_data: parse error".into())
        );
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"status\":\"success\"}",
            b"{\"status\":\"success\",\"data\":{\"resultType\":\"string\",\"result\":[1,\"x\"]}}",
            b"{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":{}}}",
        ] {
            assert!(
                matches!(decode(bad), Err(AnswerError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
