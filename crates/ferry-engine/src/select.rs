//! `--on` selection: comma-separated globs over resource names and `@tag`s.

use globset::{Glob, GlobSet, GlobSetBuilder};

#[derive(Debug, Clone)]
pub struct Selection {
    source: String,
    names: GlobSet,
    tags: Vec<String>,
}

impl Selection {
    /// Parse `web-*,@db,cache`. An empty item or a bad glob is a usage error.
    pub fn parse(s: &str) -> Result<Selection, String> {
        let mut b = GlobSetBuilder::new();
        let mut tags = Vec::new();
        for item in s.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("--on {s:?}: empty item"));
            }
            if let Some(t) = item.strip_prefix('@') {
                if t.is_empty() {
                    return Err(format!("--on {s:?}: `@` needs a tag name"));
                }
                tags.push(t.to_string());
            } else {
                b.add(Glob::new(item).map_err(|e| format!("--on {s:?}: {e}"))?);
            }
        }
        let names = b.build().map_err(|e| format!("--on {s:?}: {e}"))?;
        Ok(Selection { source: s.to_string(), names, tags })
    }

    pub fn matches(&self, name: &str, tags: &[String]) -> bool {
        self.names.is_match(name) || tags.iter().any(|t| self.tags.contains(t))
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_tags() {
        let s = Selection::parse("web-*,@db").unwrap();
        assert!(s.matches("web-1", &[]));
        assert!(!s.matches("cache", &[]));
        assert!(s.matches("cache", &["db".to_string()]));
        assert!(Selection::parse("a,,b").is_err());
        assert!(Selection::parse("@").is_err());
    }
}
