//! [`Table`]: one console answer as the client receives it: RowDescription (numbers as
//! `int8`, so drivers read them as numbers, text as `text`), a DataRow per row and
//! CommandComplete `SHOW`.

use pgbastion_wire::{BackendMessage, DataRow, EncodeError, FieldDescription};

/// `int8`.
const INT8_OID: u32 = 20;
/// `text`.
const TEXT_OID: u32 = 25;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number (`int8`).
    Int,
    /// Text.
    Text,
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Int(i64),
    /// Text.
    Text(String),
    /// NULL: not known.
    Null,
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Self::from(n as u64)
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Self::Int(n.into())
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

impl Value {
    fn text(&self) -> Option<String> {
        match self {
            Self::Int(n) => Some(n.to_string()),
            Self::Text(text) => Some(text.clone()),
            Self::Null => None,
        }
    }
}

/// A console answer with rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    columns: Vec<(&'static str, Kind)>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    /// An empty table with `columns`.
    pub fn new(columns: &[(&'static str, Kind)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// A table of one text column with one row.
    pub fn single(column: &'static str, value: impl Into<Value>) -> Self {
        let mut table = Self::new(&[(column, Kind::Text)]);
        table.push(vec![value.into()]);
        table
    }

    /// Adds a row (as many values as columns).
    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The rows so far.
    pub fn rows(&self) -> &[Vec<Value>] {
        &self.rows
    }

    /// The messages that carry the table to the client.
    pub fn messages(&self) -> Result<Vec<BackendMessage>, EncodeError> {
        let fields = self
            .columns
            .iter()
            .map(|(name, kind)| field(name, *kind))
            .collect();
        let mut messages = vec![BackendMessage::RowDescription { fields }];
        for row in &self.rows {
            let texts: Vec<Option<String>> = row.iter().map(Value::text).collect();
            let values = texts.iter().map(|t| t.as_deref().map(str::as_bytes));
            messages.push(BackendMessage::DataRow(DataRow::new(values)?));
        }
        messages.push(BackendMessage::CommandComplete {
            tag: "SHOW".to_owned(),
        });
        Ok(messages)
    }
}

fn field(name: &str, kind: Kind) -> FieldDescription {
    let (type_oid, type_size) = match kind {
        Kind::Int => (INT8_OID, 8),
        Kind::Text => (TEXT_OID, -1),
    };
    FieldDescription {
        name: name.to_owned(),
        table_oid: 0,
        column_id: 0,
        type_oid,
        type_size,
        type_modifier: -1,
        format: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_int8_text_is_text_and_none_is_null() {
        let mut table = Table::new(&[("n", Kind::Int), ("name", Kind::Text)]);
        table.push(vec![Value::from(7u64), Value::from(None::<&str>)]);
        let messages = table.messages().expect("encodes");
        let BackendMessage::RowDescription { fields } = &messages[0] else {
            panic!("{messages:?}");
        };
        assert_eq!((fields[0].type_oid, fields[1].type_oid), (20, 25));
        let BackendMessage::DataRow(row) = &messages[1] else {
            panic!("{messages:?}");
        };
        assert_eq!(row.get(0), Some(Some(&b"7"[..])));
        assert_eq!(row.get(1), Some(None));
        assert!(matches!(&messages[2], BackendMessage::CommandComplete { tag } if tag == "SHOW"));
    }
}
