//! What kind of error Nix reported. Nix 2.8's CLI gives no structured errors, so
//! [`NixErrorKind::of`] reads its message: the one place ferry classifies Nix's text (besides
//! recognising its own markers, `nix_cli.rs`). Everyone else matches on the enum.

/// The kinds of Nix evaluation errors ferry acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NixErrorKind {
    /// `infinite recursion encountered`.
    InfiniteRecursion,
    /// `attribute 'NAME' missing`. `paths`: the `resources.…` attribute paths in the source
    /// line Nix quotes (`resources.web.addr`), to tell a missing resource from a missing output.
    MissingAttribute { name: String, paths: Vec<String> },
    /// A value of the wrong type: `cannot coerce …`, `cannot add …`, `cannot compare …`,
    /// `value is … while a … was expected`.
    Type,
    /// Anything else (a syntax error, an undefined variable, a `throw`…).
    Other,
}

impl NixErrorKind {
    /// Classify Nix's error message (as Nix printed it, with or without a trace).
    pub fn of(message: &str) -> NixErrorKind {
        if message.contains("infinite recursion") {
            return NixErrorKind::InfiniteRecursion;
        }
        if message.contains("attribute '") {
            if !message.contains("missing") {
                return NixErrorKind::Other;
            }
            let Some(name) = message.split("attribute '").nth(1).and_then(|r| r.split('\'').next()) else {
                return NixErrorKind::Other;
            };
            let paths = message
                .split("resources.")
                .skip(1)
                .map(|piece| {
                    piece
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                        .collect::<String>()
                })
                .filter(|p| !p.is_empty())
                .collect();
            return NixErrorKind::MissingAttribute { name: name.to_string(), paths };
        }
        if ["cannot coerce", "cannot add", "cannot compare", "while a", "while an"]
            .iter()
            .any(|p| message.contains(p))
        {
            return NixErrorKind::Type;
        }
        NixErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_nix_2_8_messages() {
        assert_eq!(
            NixErrorKind::of("infinite recursion encountered\n       at /d.nix:3:5:"),
            NixErrorKind::InfiniteRecursion
        );
        let m = "attribute 'nothere' missing\n\n       at /d.nix:4:20:\n\n            3|   resources.b.inputs.x = resources.nothere.path;";
        assert_eq!(
            NixErrorKind::of(m),
            NixErrorKind::MissingAttribute {
                name: "nothere".into(),
                paths: vec!["b.inputs.x".into(), "nothere.path".into()]
            }
        );
        assert_eq!(NixErrorKind::of("cannot coerce an integer to a string"), NixErrorKind::Type);
        assert_eq!(NixErrorKind::of("value is a string while an integer was expected"), NixErrorKind::Type);
        assert_eq!(NixErrorKind::of("cannot add a string to an integer"), NixErrorKind::Type);
        assert_eq!(NixErrorKind::of("undefined variable 'x'"), NixErrorKind::Other);
        // An attribute error that is not "missing" is not a missing attribute (nor a type error).
        assert_eq!(NixErrorKind::of("attribute 'x' already defined while a"), NixErrorKind::Other);
    }
}
