//! `metrics.json`: a stage's metrics, one JSON object (what the op returned).
//!
//! Written pretty-printed with a final newline ([`write`]): by the torch
//! worker for a torch op, by the runner (`exec::job`) for a native op's
//! returned metrics. Readers take any JSON object.

use std::path::Path;

use serde_json::{Map, Value};

use super::{Error, Result};

/// A stage's metrics (the same map as `crate::ops::Metrics`).
pub type Metrics = Map<String, Value>;

pub const FILE: &str = "metrics.json";

/// Reads a JSON object (an artifact's `metrics.json`, or another small JSON file).
pub fn read(path: &Path) -> Result<Metrics> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::format(
            path,
            format!("expected a JSON object, found {}", kind(&other)),
        )),
        Err(e) => Err(Error::format(path, format!("not valid JSON: {e}"))),
    }
}

/// `DIR/metrics.json`, or `None` when the artifact has none (a cmd stage's).
pub fn read_in(dir: &Path) -> Result<Option<Metrics>> {
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(None);
    }
    read(&path).map(Some)
}

/// Writes `metrics` pretty-printed with a final newline.
pub fn write(path: &Path, metrics: &Metrics) -> Result<()> {
    let text = serde_json::to_string_pretty(metrics)
        .map_err(|e| Error::format(path, format!("cannot encode the metrics: {e}")))?;
    super::write_file(path, text + "\n")
}

/// The `device` a torch stage reports (`cpu`, `cuda:0 (NVIDIA H100 …)`).
pub fn device(metrics: &Metrics) -> Option<&str> {
    metrics.get("device").and_then(Value::as_str)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let m = super::super::assert_round_trip("metrics.json", read, write);
        assert_eq!(device(&m), Some("cpu"));
        assert_eq!(m["validation"]["n"], 20);
    }

    #[test]
    fn rejects_non_objects() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        std::fs::write(&p, "[1]").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("found an array"));
        std::fs::write(&p, "{").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("not valid JSON"));
        assert!(read_in(&dir.path().join("none")).unwrap().is_none());
    }
}
