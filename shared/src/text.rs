//! Text from guests and processes made safe to show: terminal escape
//! sequences and control characters removed, so console output cannot
//! restyle or move an operator's terminal.

/// `line` without terminal escape sequences and control characters (tabs
/// become four spaces).
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences: ESC [ parameters final-byte; other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' {
            out.push_str("    ");
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escape_sequences_and_controls_go() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS 1.16"),
            "SeaBIOS 1.16"
        );
        assert_eq!(printable("plain\r"), "plain");
        assert_eq!(printable("a\tb"), "a    b");
    }
}
