//! Quoting words for the remote shell.

/// Quote one word for a POSIX shell.
pub fn quote(s: &str) -> String {
    // shlex refuses a NUL (no shell argument can hold one): drop it, then quote the rest the
    // POSIX way, where only `'` needs care (`'\''`).
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| format!("'{}'", s.replace('\0', "").replace('\'', "'\\''")))
}

/// A remote command line from words, each quoted.
pub fn command_line<S: AsRef<str>>(words: &[S]) -> String {
    words.iter().map(|w| quote(w.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod quote_tests {
    use super::quote;
    use proptest::prelude::*;

    /// What `sh` makes of `quote(s)` as one word.
    fn through_sh(s: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", quote(s)))
            .output()
            .expect("sh");
        assert!(out.status.success(), "sh failed on {:?}", quote(s));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    #[test]
    fn a_nul_is_dropped_and_quotes_stay_quoted() {
        assert_eq!(through_sh("it's\0 $(rm -rf /)"), "it's $(rm -rf /)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Every string (NULs aside, which no shell word can hold) comes back from `sh` as it went in.
        #[test]
        fn every_string_survives_the_shell(s in "(?s)[\\x00-\\x7f'\"$`\\\\ \n\té€😀]{0,24}") {
            prop_assert_eq!(through_sh(&s), s.replace('\0', ""));
        }
    }
}
