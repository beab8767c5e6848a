//! How the CLI prints, whatever the command: one line of JSON per document
//! (the views themselves live beside the command group that prints them),
//! aligned human tables, and the snake_case words for protobuf enums.

use serde::Serialize;
use std::fmt::Debug;

/// The node id the API uses for "none": no leader known, a VM not placed,
/// a VM not pinned, a list not filtered by node.
pub const NO_NODE: u64 = 0;

/// Columns of a human table are separated by this many spaces.
const COLUMN_GAP: usize = 2;

/// snake_case of a prost enum's CamelCase `Debug` name ("OnFailure" →
/// "on_failure"), so JSON and tables use one spelling for every enum.
pub fn enum_word(debug: String) -> String {
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The word for a decoded protobuf enum (`E::try_from(i32)`), or "unknown"
/// for a value this build does not know (one from a newer server).
pub fn known_word<E: Debug, X>(decoded: Result<E, X>) -> String {
    decoded.map_or_else(|_| "unknown".into(), |e| enum_word(format!("{e:?}")))
}

/// A node id for a human table or line: "-" for [`NO_NODE`].
pub fn node_cell(node_id: u64) -> String {
    if node_id == NO_NODE {
        "-".to_string()
    } else {
        node_id.to_string()
    }
}

/// Prints `value` as one line of JSON (the `--json` contract: one document
/// per line).
pub fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

/// Prints rows under headers, columns padded to their widest cell, so the
/// human output of every list command lines up the same way.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            match widths.get(i) {
                Some(&width) if i + 1 < cells.len() => {
                    out.push_str(&format!("{cell:<width$}"));
                    out.push_str(&" ".repeat(COLUMN_GAP));
                }
                _ => out.push_str(cell),
            }
        }
        println!("{}", out.trim_end());
    };
    let header_cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    line(&header_cells);
    for row in rows {
        line(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_shared::proto::v1 as pb;

    #[test]
    fn enum_words_are_snake_case() {
        assert_eq!(enum_word("OnFailure".into()), "on_failure");
        assert_eq!(
            blixard_shared::words::vm_state_word(pb::VmState::Pending),
            "pending"
        );
    }

    #[test]
    fn unknown_enum_values_read_unknown() {
        assert_eq!(known_word(pb::NodeHealth::try_from(99)), "unknown");
        assert_eq!(
            known_word(pb::RestartPolicy::try_from(
                pb::RestartPolicy::OnFailure as i32
            )),
            "on_failure"
        );
        assert_eq!(node_cell(NO_NODE), "-");
        assert_eq!(node_cell(7), "7");
    }
}
