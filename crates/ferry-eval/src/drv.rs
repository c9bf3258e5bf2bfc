//! Placeholders hidden in derivations: a derivation built from a placeholder collapses to an
//! out path with no placeholder in sight, but its `.drv` file (or one in its closure) still holds
//! the placeholder text. This reads `.drv` files (ATerm) straight from the store, each once per
//! run, and collects the placeholders of a derivation's whole closure (its input derivations,
//! recursively). No Nix invocation: the files are there whenever the evaluation wrote them
//! (`apply`, `--read-write-mode`) or an earlier run did.

use crate::placeholder::{find_in_str, Placeholder};
use crate::EvalError;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

type Found = Arc<BTreeSet<Placeholder>>;

/// Memoized per `.drv` path: the placeholders in its closure.
#[derive(Default)]
pub(crate) struct DrvReader {
    memo: Mutex<HashMap<String, Found>>,
}

impl DrvReader {
    /// The placeholders in the closure of `drv`; `None` when the file is not in the store (a
    /// read-only evaluation that never wrote it).
    pub fn closure(&self, drv: &str) -> Result<Option<Found>, EvalError> {
        if let Some(f) = self.memo.lock().unwrap_or_else(|e| e.into_inner()).get(drv) {
            return Ok(Some(Arc::clone(f)));
        }
        // Bytes: Nix strings (and so a derivation's environment) need not be UTF-8.
        let text = match std::fs::read(drv) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let inputs = input_drvs(&text)
            .ok_or_else(|| EvalError::Protocol(format!("{drv}: not a derivation file ferry can read")))?;
        let mut found: BTreeSet<Placeholder> = find_in_str(&text).into_iter().collect();
        for input in inputs {
            // An input missing from the store leaves that branch unknown, not the whole closure.
            if let Some(f) = self.closure(&input)? {
                found.extend(f.iter().cloned());
            }
        }
        let found = Arc::new(found);
        self.memo.lock().unwrap_or_else(|e| e.into_inner()).insert(drv.to_string(), Arc::clone(&found));
        Ok(Some(found))
    }
}

/// The input derivations of a `.drv` file: `Derive([outputs],[("/nix/store/…drv",["out"]),…],…)`
/// (or `DrvWithVersion("…",[outputs],[inputs],…)`). `None` if the text is not one.
fn input_drvs(text: &str) -> Option<Vec<String>> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    if p.eat("DrvWithVersion(") {
        p.string()?;
        p.expect(b',')?;
    } else if !p.eat("Derive(") {
        return None;
    }
    p.skip_value()?; // outputs
    p.expect(b',')?;
    p.list(|p| {
        p.expect(b'(')?;
        let path = p.string()?;
        p.expect(b',')?;
        p.skip_value()?;
        p.expect(b')')?;
        Some(path)
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn eat(&mut self, lit: &str) -> bool {
        let ok = self.s[self.i..].starts_with(lit.as_bytes());
        if ok {
            self.i += lit.len();
        }
        ok
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.s.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    });
                }
                other => out.push(other),
            }
        }
    }

    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.expect(b'[')?;
        let mut out = Vec::new();
        if self.expect(b']').is_some() {
            return Some(out);
        }
        loop {
            out.push(item(self)?);
            if self.expect(b']').is_some() {
                return Some(out);
            }
            self.expect(b',')?;
        }
    }

    /// A string, a list or a tuple, whatever it holds.
    fn skip_value(&mut self) -> Option<()> {
        match *self.s.get(self.i)? {
            b'"' => self.string().map(drop),
            b'[' => self.list(Self::skip_value).map(drop),
            b'(' => {
                self.i += 1;
                loop {
                    self.skip_value()?;
                    if self.expect(b')').is_some() {
                        return Some(());
                    }
                    self.expect(b',')?;
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_input_derivations() {
        let t = r#"Derive([("out","/nix/store/a-x","",""),("dev","/nix/store/b-x","","")],[("/nix/store/c-y.drv",["out"]),("/nix/store/d-z.drv",["dev","out"])],["/nix/store/e-src"],"x86_64-linux","/bin/sh",["-c","echo \"<ferry:unknown:k:publicKey>\" > $out"],[("out","/nix/store/a-x")])"#;
        assert_eq!(input_drvs(t).unwrap(), vec!["/nix/store/c-y.drv", "/nix/store/d-z.drv"]);
        assert_eq!(find_in_str(t), vec![Placeholder { resource: "k".into(), output: "publicKey".into() }]);
        assert_eq!(
            input_drvs(r#"Derive([("out","/nix/store/a-x","","")],[],[],"s","b",[],[])"#).unwrap().len(),
            0
        );
        assert!(input_drvs("not a drv").is_none());
        assert!(input_drvs(r#"Derive([("out""#).is_none());
    }

    #[test]
    fn closures_are_read_through_inputs_and_missing_files_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        // Its environment is not UTF-8 (Nix strings are bytes).
        let leaf = [
            &br#"Derive([("out","/o1","","")],[],[],"s","b",["<ferry:unknown:k:publicKey>"],[("x",""#[..],
            &[0xff],
            br#"")])"#,
        ]
        .concat();
        let mid = format!(
            r#"Derive([("out","/o2","","")],[("{}",["out"]),("{}",["out"])],[],"s","b",[],[])"#,
            p("leaf.drv"),
            p("gone.drv")
        );
        std::fs::write(p("leaf.drv"), leaf).unwrap();
        std::fs::write(p("mid.drv"), mid).unwrap();
        let r = DrvReader::default();
        let f = r.closure(&p("mid.drv")).unwrap().unwrap();
        assert_eq!(f.iter().map(|x| x.resource.as_str()).collect::<Vec<_>>(), vec!["k"]);
        assert!(r.closure(&p("gone.drv")).unwrap().is_none());
        // Memoized: a second read does not touch the file.
        std::fs::remove_file(p("leaf.drv")).unwrap();
        assert_eq!(r.closure(&p("leaf.drv")).unwrap().unwrap().len(), 1);
    }
}
