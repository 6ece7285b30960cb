//! Any SQL, for `butterfly query`: DuckDB values become JSON values.

use butterfly_store::Error;
use butterfly_syntax::datetime::civil_from_days;
use duckdb::core::LogicalTypeId;
use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;

use crate::backend;

/// The result of [`DuckDbStore::run_sql`](crate::DuckDbStore::run_sql): column names and rows.
///
/// Values are converted to JSON: integers and floats to numbers (a 128-bit integer that does
/// not fit in 64 bits, a decimal, or a float that is not finite, to text), text to strings,
/// booleans, `NULL` to `null`, `JSON` columns to the JSON they hold, lists and arrays to arrays,
/// structs to objects, maps to arrays of `[key, value]` pairs, timestamps to RFC 3339 text
/// (`...Z` for `TIMESTAMPTZ`; plain `TIMESTAMP` has no zone and gets none), dates and times to
/// ISO 8601 text, intervals to text such as `1 month 2 days 3000000 us`, and blobs to
/// lowercase hex.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// How a column's values are converted, beyond what the value says itself.
#[derive(Clone, Copy, PartialEq)]
enum Column {
    Json,
    TimestampTz,
    Other,
}

pub(crate) fn run(conn: &Connection, sql: &str) -> Result<QueryResult, Error> {
    let mut statement = conn.prepare(sql).map_err(backend("prepare the query"))?;
    let mut rows = statement.query([]).map_err(backend("run the query"))?;
    let mut result = QueryResult::default();
    let mut kinds = Vec::new();
    if let Some(statement) = rows.as_ref() {
        result.columns = statement.column_names();
        for idx in 0..result.columns.len() {
            let logical = statement.column_logical_type(idx);
            let kind = if logical.get_alias().as_deref() == Some("JSON") {
                Column::Json
            } else if logical.id() == LogicalTypeId::TimestampTZ {
                Column::TimestampTz
            } else {
                Column::Other
            };
            kinds.push(kind);
        }
    }
    while let Some(row) = rows.next().map_err(backend("read the query's rows"))? {
        let mut values = Vec::with_capacity(kinds.len());
        for (idx, kind) in kinds.iter().enumerate() {
            let value: Value = row.get(idx).map_err(backend("read a value"))?;
            values.push(match (kind, value) {
                (Column::Json, Value::Text(text)) => {
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                }
                (Column::TimestampTz, Value::Timestamp(unit, value)) => {
                    serde_json::Value::String(timestamp(unit, value, true))
                }
                (_, value) => json(value),
            });
        }
        result.rows.push(values);
    }
    Ok(result)
}

/// One DuckDB value as JSON.
fn json(value: Value) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::TinyInt(n) => n.into(),
        Value::SmallInt(n) => n.into(),
        Value::Int(n) => n.into(),
        Value::BigInt(n) => n.into(),
        Value::UTinyInt(n) => n.into(),
        Value::USmallInt(n) => n.into(),
        Value::UInt(n) => n.into(),
        Value::UBigInt(n) => n.into(),
        Value::HugeInt(n) => {
            i64::try_from(n).map_or_else(|_| Json::String(n.to_string()), Json::from)
        }
        Value::UHugeInt(n) => {
            u64::try_from(n).map_or_else(|_| Json::String(n.to_string()), Json::from)
        }
        Value::Float(x) => float(f64::from(x)),
        Value::Double(x) => float(x),
        Value::Decimal(d) => Json::String(d.to_string()),
        Value::Timestamp(unit, value) => Json::String(timestamp(unit, value, false)),
        Value::Text(text) | Value::Enum(text) => Json::String(text),
        Value::Blob(bytes) | Value::Geometry(bytes) => Json::String(hex(&bytes)),
        Value::Date32(days) => {
            let (year, month, day) = civil_from_days(i64::from(days));
            Json::String(format!("{year:04}-{month:02}-{day:02}"))
        }
        Value::Time64(unit, value) => {
            let micros = unit.to_micros(value);
            let seconds = micros.div_euclid(1_000_000);
            Json::String(format!(
                "{:02}:{:02}:{:02}.{:06}",
                seconds / 3600,
                seconds / 60 % 60,
                seconds % 60,
                micros.rem_euclid(1_000_000)
            ))
        }
        Value::Interval {
            months,
            days,
            nanos,
        } => Json::String(format!("{months} months {days} days {} us", nanos / 1000)),
        Value::List(items) | Value::Array(items) => {
            Json::Array(items.into_iter().map(json).collect())
        }
        Value::Struct(fields) => Json::Object(
            fields
                .iter()
                .map(|(name, value)| (name.clone(), json(value.clone())))
                .collect(),
        ),
        Value::Map(entries) => Json::Array(
            entries
                .iter()
                .map(|(key, value)| Json::Array(vec![json(key.clone()), json(value.clone())]))
                .collect(),
        ),
        Value::Union(inner) => json(*inner),
        other => Json::String(format!("{other:?}")),
    }
}

fn float(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or_else(
        || serde_json::Value::String(x.to_string()),
        serde_json::Value::Number,
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// RFC 3339 text for a time since the epoch, with `Z` if `utc`.
fn timestamp(unit: TimeUnit, value: i64, utc: bool) -> String {
    let (seconds, fraction) = match unit {
        TimeUnit::Second => (value, String::new()),
        TimeUnit::Millisecond => (
            value.div_euclid(1000),
            format!(".{:03}", value.rem_euclid(1000)),
        ),
        TimeUnit::Microsecond => (
            value.div_euclid(1_000_000),
            format!(".{:06}", value.rem_euclid(1_000_000)),
        ),
        TimeUnit::Nanosecond => (
            value.div_euclid(1_000_000_000),
            format!(".{:09}", value.rem_euclid(1_000_000_000)),
        ),
    };
    let (year, month, day) =
        butterfly_syntax::datetime::civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}{}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        if utc { "Z" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_047), (2024, 11, 20));
        assert_eq!(
            timestamp(TimeUnit::Microsecond, 1_732_096_800_123_456, true),
            "2024-11-20T10:00:00.123456Z"
        );
        assert_eq!(
            timestamp(TimeUnit::Microsecond, -1, false),
            "1969-12-31T23:59:59.999999"
        );
    }
}
