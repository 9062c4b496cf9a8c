//! PostgreSQL type OIDs for SQLite values, and their text and binary encodings.

use rusqlite::types::Value;

/// `bool`
pub const BOOL: u32 = 16;
/// `bytea`
pub const BYTEA: u32 = 17;
/// `int8`
pub const INT8: u32 = 20;
/// `int2`
pub const INT2: u32 = 21;
/// `int4`
pub const INT4: u32 = 23;
/// `text`
pub const TEXT: u32 = 25;
/// `float4`
pub const FLOAT4: u32 = 700;
/// `float8`
pub const FLOAT8: u32 = 701;
/// `varchar`
pub const VARCHAR: u32 = 1043;

/// The OID for a declared column type, by SQLite's affinity rules (section 3.1 of
/// "Datatypes In SQLite"), with BOOLEAN and BYTEA recognised.
pub fn oid_for_declared(decl: &str) -> u32 {
    let decl = decl.to_ascii_uppercase();
    if decl.contains("BOOL") {
        BOOL
    } else if decl.contains("INT") {
        INT8
    } else if decl.contains("CHAR") || decl.contains("CLOB") || decl.contains("TEXT") {
        TEXT
    } else if decl.contains("BLOB") || decl.contains("BYTEA") {
        BYTEA
    } else if decl.contains("REAL") || decl.contains("FLOA") || decl.contains("DOUB") {
        FLOAT8
    } else {
        TEXT
    }
}

/// The `typlen` PostgreSQL reports for a type (-1: variable length).
pub fn type_size(oid: u32) -> i16 {
    match oid {
        BOOL => 1,
        INT2 => 2,
        INT4 | FLOAT4 => 4,
        INT8 | FLOAT8 => 8,
        _ => -1,
    }
}

/// The OID for a value when no column type was declared.
pub fn oid_for_value(value: &Value) -> u32 {
    match value {
        Value::Integer(_) => INT8,
        Value::Real(_) => FLOAT8,
        Value::Blob(_) => BYTEA,
        Value::Text(_) | Value::Null => TEXT,
    }
}

/// The OID for a `::type` cast on a placeholder.
pub fn oid_for_cast(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "int2" | "smallint" => INT2,
        "int" | "int4" | "integer" => INT4,
        "int8" | "bigint" => INT8,
        "float4" | "real" => FLOAT4,
        "float8" | "double" | "numeric" => FLOAT8,
        "bool" | "boolean" => BOOL,
        "bytea" => BYTEA,
        "text" => TEXT,
        "varchar" => VARCHAR,
        _ => return None,
    })
}

/// Why a value could not be converted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConversionError(pub String);

/// Encodes `value` as column type `oid`, in text (`binary == false`) or binary format.
pub fn encode(value: &Value, oid: u32, binary: bool) -> Result<Option<Vec<u8>>, ConversionError> {
    if *value == Value::Null {
        return Ok(None);
    }
    let bytes = match (oid, binary) {
        (INT8 | INT4 | INT2, true) => {
            let n = as_i64(value)?;
            match oid {
                INT2 => i16::try_from(n)
                    .map_err(|e| ConversionError(e.to_string()))?
                    .to_be_bytes()
                    .to_vec(),
                INT4 => i32::try_from(n)
                    .map_err(|e| ConversionError(e.to_string()))?
                    .to_be_bytes()
                    .to_vec(),
                _ => n.to_be_bytes().to_vec(),
            }
        }
        (FLOAT8, true) => as_f64(value)?.to_be_bytes().to_vec(),
        (FLOAT4, true) => (as_f64(value)? as f32).to_be_bytes().to_vec(),
        (BOOL, true) => vec![u8::from(as_i64(value)? != 0)],
        (BOOL, false) => {
            if as_i64(value)? != 0 {
                b"t".to_vec()
            } else {
                b"f".to_vec()
            }
        }
        (BYTEA, true) => as_bytes(value),
        (BYTEA, false) => hex(&as_bytes(value)).into_bytes(),
        (_, _) => as_text(value).into_bytes(),
    };
    Ok(Some(bytes))
}

fn as_i64(value: &Value) -> Result<i64, ConversionError> {
    match value {
        Value::Integer(n) => Ok(*n),
        Value::Real(f) if f.fract() == 0.0 => Ok(*f as i64),
        Value::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| ConversionError(format!("invalid input syntax for type bigint: \"{t}\""))),
        other => Err(ConversionError(format!(
            "cannot convert {other:?} to an integer"
        ))),
    }
}

fn as_f64(value: &Value) -> Result<f64, ConversionError> {
    match value {
        Value::Integer(n) => Ok(*n as f64),
        Value::Real(f) => Ok(*f),
        Value::Text(t) => t.trim().parse().map_err(|_| {
            ConversionError(format!(
                "invalid input syntax for type double precision: \"{t}\""
            ))
        }),
        other => Err(ConversionError(format!(
            "cannot convert {other:?} to a float"
        ))),
    }
}

fn as_bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::Blob(b) => b.clone(),
        other => as_text(other).into_bytes(),
    }
}

/// PostgreSQL's text form of a value.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Integer(n) => n.to_string(),
        Value::Real(f) if f.is_infinite() => {
            if *f > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            }
        }
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => hex(b),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Decodes a Bind parameter of type `oid` in text or binary format.
pub fn decode_param(
    bytes: Option<&[u8]>,
    oid: u32,
    binary: bool,
) -> Result<Value, ConversionError> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    let fixed = |n: usize| -> Result<&[u8], ConversionError> {
        (bytes.len() == n).then_some(bytes).ok_or_else(|| {
            ConversionError(format!(
                "binary parameter of type {oid} has {} bytes",
                bytes.len()
            ))
        })
    };
    if !binary {
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ConversionError("parameter is not valid UTF-8".into()))?;
        return Ok(match oid {
            INT2 | INT4 | INT8 => as_i64(&Value::Text(text)).map(Value::Integer)?,
            FLOAT4 | FLOAT8 => as_f64(&Value::Text(text)).map(Value::Real)?,
            BOOL => Value::Integer(i64::from(matches!(
                text.as_str(),
                "t" | "true" | "1" | "on" | "yes"
            ))),
            _ => Value::Text(text),
        });
    }
    Ok(match oid {
        INT2 => Value::Integer(i64::from(i16::from_be_bytes([fixed(2)?[0], bytes[1]]))),
        INT4 => Value::Integer(i64::from(i32::from_be_bytes(array(fixed(4)?)))),
        INT8 => Value::Integer(i64::from_be_bytes(array(fixed(8)?))),
        FLOAT4 => Value::Real(f64::from(f32::from_be_bytes(array(fixed(4)?)))),
        FLOAT8 => Value::Real(f64::from_be_bytes(array(fixed(8)?))),
        BOOL => Value::Integer(i64::from(fixed(1)?[0] != 0)),
        BYTEA => Value::Blob(bytes.to_vec()),
        _ => match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Value::Text(text),
            Err(e) => Value::Blob(e.into_bytes()),
        },
    })
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}
