//! Every example in the user guide (`docs/guide/*.md`) runs, against the real binary and Nix.
//!
//! How a page is run (each page in its own fresh sandbox directory, blocks in document order):
//!
//! - A ` ```nix ` block must start with `# file: NAME` (a path relative to the sandbox, e.g.
//!   `deployment.nix` or `cycle/deployment.nix`); it is written there, replacing an earlier
//!   version. A `nix` block without that line fails the test: every deployment shown must run.
//! - A ` ```console ` block is a shell session. Each `$ COMMAND` line runs with `sh -c` in the
//!   sandbox, with `ferry` on `PATH` resolving to the binary under test (and the example
//!   provider `ferry-provider-counter` when the page mentions it, built on demand), `NO_COLOR=1`,
//!   `FERRY_NIX_OPTIONS=substituters=` and stdin from `/dev/null`. Its exit status must be 0,
//!   or N when the line ends with the comment `# exit N`.
//! - The lines after a command, up to the next `$` line, are its expected output: each must
//!   appear in the actual output (stdout, then stderr), in order, as a whole line (trailing
//!   spaces ignored). A line that is just `...` elides output; `...` inside a line matches any
//!   text (for timestamps, hashes, ports). Blank lines are ignored.
//! - Everywhere (files, commands, expected output) the placeholder directory `/tmp/ferry-guide`
//!   stands for the sandbox, so the guide reads as if run in `/tmp/ferry-guide`, and
//!   `/path/to/ferry` stands for this repository's root (so a page can import
//!   `/path/to/ferry/crates/ferry-testkit/nix`, the test systems).
//! - `/path/to/nixpkgs` stands for the real nixpkgs (20.09, `ferry_testkit::nixpkgs`): a page
//!   that mentions it evaluates NixOS and the module system, and plans only what uses it
//!   (nothing from it can be built offline). Without the tarball such a page is skipped,
//!   saying so (never under CI).
//! - A page that mentions `ferry-testhosts` gets it on `PATH` too (built on demand, like the
//!   counter provider). Every `ferry-testhosts up --dir DIR …` it runs is undone by
//!   `ferry-testhosts down --dir DIR` when the page ends, whether it passed or failed.
//! - Other fences (` ```sh ` for install steps, ` ```text `, ` ```json `) are not run.
//!
//! Also checked: every relative link in `docs/README.md` and `docs/guide/*.md` names a file
//! that exists, and every guide page has a test here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use ferry_testkit::Sandbox;

/// The directory the guide's examples pretend to run in.
const PLACEHOLDER: &str = "/tmp/ferry-guide";

/// Stands for the repository's root in the guide.
const REPO_PLACEHOLDER: &str = "/path/to/ferry";

/// Stands for the real nixpkgs in the guide.
const NIXPKGS_PLACEHOLDER: &str = "/path/to/nixpkgs";

/// The pages with a test below; a new page must be added here.
const PAGES: &[&str] = &[
    "getting-started.md",
    "deployments.md",
    "local-provider.md",
    "machines.md",
    "state.md",
    "cli.md",
    "providers.md",
    "processes.md",
    "flakes-and-modules.md",
];

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[derive(Debug)]
enum Block {
    File { name: String, text: String, line: usize },
    Session(Vec<Step>),
}

#[derive(Debug)]
struct Step {
    command: String,
    code: i32,
    expected: Vec<String>,
    line: usize,
}

/// The runnable blocks of a page, in order. Panics on malformed blocks.
fn parse(page: &str, md: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = md.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else { continue };
        let lang = lang.trim().to_string();
        let mut body = Vec::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim_end() == "```" {
                closed = true;
                break;
            }
            body.push(l);
        }
        assert!(closed, "{page}:{}: unterminated ``` block", i + 1);
        match lang.as_str() {
            "nix" => {
                let first = body.first().copied().unwrap_or_default();
                let name = first.strip_prefix("# file:").map(str::trim).unwrap_or_else(|| {
                    panic!("{page}:{}: a nix block must start with `# file: NAME`", i + 2)
                });
                assert!(!name.is_empty() && !name.starts_with('/'), "{page}:{}: bad file name", i + 2);
                blocks.push(Block::File {
                    name: name.to_string(),
                    text: body.join("\n") + "\n",
                    line: i + 2,
                });
            }
            "console" => blocks.push(Block::Session(session(page, i + 2, &body))),
            _ => {}
        }
    }
    blocks
}

fn session(page: &str, first_line: usize, body: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (n, l) in body.iter().enumerate() {
        if let Some(cmd) = l.strip_prefix("$ ") {
            let (command, code) = match cmd.rsplit_once("# exit ") {
                Some((c, n)) if n.trim().parse::<i32>().is_ok() => {
                    (c.trim_end().to_string(), n.trim().parse().unwrap_or_default())
                }
                _ => (cmd.trim_end().to_string(), 0),
            };
            steps.push(Step { command, code, expected: Vec::new(), line: first_line + n });
        } else if !l.trim().is_empty() {
            match steps.last_mut() {
                Some(s) => s.expected.push(l.trim_end().to_string()),
                None => panic!("{page}:{}: output before any `$ ` command", first_line + n),
            }
        }
    }
    assert!(!steps.is_empty(), "{page}:{first_line}: console block without a `$ ` command");
    steps
}

/// Whether `actual` (one line) matches `pattern`, where `...` matches any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    if !pattern.contains("...") {
        return pattern == actual;
    }
    let parts: Vec<&str> = pattern.split("...").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || actual.len() < first.len() + last.len() || !actual.ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(p) => rest = &rest[p + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The first expected line not found (in order) in `actual`, if any.
fn missing_line<'a>(expected: &'a [String], actual: &str) -> Option<&'a str> {
    let mut lines = actual.lines().map(str::trim_end);
    expected
        .iter()
        .filter(|w| w.trim() != "...")
        .find(|want| !lines.any(|got| line_matches(want, got)))
        .map(String::as_str)
}

/// Build `cargo build -p PACKAGE [--bin BIN]` with the profile of the binary under test, so the
/// program lands beside `ferry`; returns that directory.
fn build_beside(ferry: &Path, package: &str, bin: Option<&str>, program: &str) -> PathBuf {
    let dir = ferry.parent().expect("binary directory").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package]).current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(b) = bin {
        cmd.args(["--bin", b]);
    }
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("run cargo build -p {package}: {e}"));
    assert!(status.success(), "cargo build -p {package} failed");
    assert!(dir.join(program).exists(), "no {program} in {}", dir.display());
    dir
}

/// Directory holding `ferry-provider-counter`, built once (the providers page uses it).
fn counter_provider_dir(ferry: &Path) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_beside(ferry, "ferry-provider-counter", None, "ferry-provider-counter"))
        .clone()
}

/// Directory holding `ferry-testhosts`, built once (the machines page uses it).
fn testhosts_dir(ferry: &Path) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_beside(ferry, "ferry-testkit", Some("ferry-testhosts"), "ferry-testhosts"))
        .clone()
}

/// Test hosts a page started (`ferry-testhosts up --dir DIR`): stopped on drop, so a failing
/// page leaves no sshd behind. Declared after the sandbox, so it runs before the sandbox is
/// removed.
struct TestHostsGuard {
    program: PathBuf,
    dirs: Vec<String>,
}

impl TestHostsGuard {
    /// Note the `--dir` of a `ferry-testhosts up` command line (before it runs).
    fn note(&mut self, command: &str) {
        let words: Vec<&str> = command.split_whitespace().collect();
        if !words.iter().any(|w| w.ends_with("ferry-testhosts")) || !words.contains(&"up") {
            return;
        }
        let dir = words.iter().enumerate().find_map(|(i, w)| match w.strip_prefix("--dir=") {
            Some(d) => Some(d.to_string()),
            None => (*w == "--dir").then(|| words.get(i + 1).map(|d| d.to_string())).flatten(),
        });
        if let Some(d) = dir {
            if !self.dirs.contains(&d) {
                self.dirs.push(d);
            }
        }
    }
}

impl Drop for TestHostsGuard {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = Command::new(&self.program)
                .args(["down", "--dir", dir])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// This repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

fn run_page(page: &str) {
    let path = docs_dir().join("guide").join(page);
    let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let blocks = parse(page, &md);
    assert!(!blocks.is_empty(), "{page}: no runnable examples");
    let nixpkgs = if md.contains(NIXPKGS_PLACEHOLDER) {
        match ferry_testkit::nixpkgs::real_nixpkgs(page) {
            Some(p) => p.display().to_string(),
            None => return,
        }
    } else {
        String::new()
    };

    let ferry = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let sandbox = Sandbox::new(env!("CARGO_BIN_EXE_ferry"));
    let root = sandbox.path().display().to_string();
    let repo = repo_root().display().to_string();
    let subst = |s: &str| {
        let s = if nixpkgs.is_empty() { s.to_string() } else { s.replace(NIXPKGS_PLACEHOLDER, &nixpkgs) };
        s.replace(REPO_PLACEHOLDER, &repo).replace(PLACEHOLDER, &root)
    };
    // `ferry` on PATH is the binary under test; the link lives outside the sandbox's listing.
    let bin = tempfile_dir(&format!("guide-bin-{}", page.trim_end_matches(".md")));
    let link = bin.join("ferry");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&ferry, &link).expect("symlink ferry");
    let mut path_var = bin.display().to_string();
    if md.contains("ferry-provider-counter") {
        path_var = format!("{path_var}:{}", counter_provider_dir(&ferry).display());
    }
    let mut hosts = None;
    if md.contains("ferry-testhosts") {
        let dir = testhosts_dir(&ferry);
        path_var = format!("{path_var}:{}", dir.display());
        hosts = Some(TestHostsGuard { program: dir.join("ferry-testhosts"), dirs: Vec::new() });
    }
    path_var = format!("{path_var}:{}", std::env::var("PATH").unwrap_or_default());

    for block in blocks {
        match block {
            Block::File { name, text, line } => {
                let p = sandbox.write(&name, &subst(&text));
                assert!(p.exists(), "{page}:{line}: could not write {name}");
            }
            Block::Session(steps) => {
                for step in steps {
                    let command = subst(&step.command);
                    if let Some(h) = hosts.as_mut() {
                        h.note(&command);
                    }
                    let out = Command::new("sh")
                        .arg("-c")
                        .arg(&command)
                        .current_dir(sandbox.path())
                        .env("PATH", &path_var)
                        .env("NO_COLOR", "1")
                        .env("FERRY_NIX_OPTIONS", "substituters=")
                        .env_remove("FERRY_LOG")
                        .stdin(Stdio::null())
                        .output()
                        .expect("run sh");
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let all = format!("{stdout}\n{stderr}");
                    let code = out.status.code().unwrap_or(-1);
                    let context = || {
                        format!(
                            "{page}:{}: `{}`\n--- stdout\n{stdout}--- stderr\n{stderr}",
                            step.line, step.command
                        )
                    };
                    assert_eq!(code, step.code, "exit status differs from the guide\n{}", context());
                    let expected: Vec<String> = step.expected.iter().map(|l| subst(l)).collect();
                    if let Some(missing) = missing_line(&expected, &all) {
                        panic!("expected output line not found (in order):\n  {missing}\n{}", context());
                    }
                }
            }
        }
    }
}

/// A fresh directory under Cargo's per-test temporary directory.
fn tempfile_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[test]
fn getting_started() {
    run_page("getting-started.md");
}

#[test]
fn deployments() {
    run_page("deployments.md");
}

#[test]
fn local_provider() {
    run_page("local-provider.md");
}

#[test]
fn machines() {
    run_page("machines.md");
}

#[test]
fn processes() {
    run_page("processes.md");
}

#[test]
fn state() {
    run_page("state.md");
}

#[test]
fn flakes_and_modules() {
    run_page("flakes-and-modules.md");
}

#[test]
fn cli() {
    run_page("cli.md");
}

#[test]
fn providers() {
    run_page("providers.md");
}

#[test]
fn every_page_is_tested() {
    let mut pages: Vec<String> = std::fs::read_dir(docs_dir().join("guide"))
        .expect("docs/guide")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    pages.sort();
    for p in &pages {
        assert!(PAGES.contains(&p.as_str()), "docs/guide/{p} has no test in tests/docs.rs");
    }
    assert_eq!(pages.len(), PAGES.len(), "pages {pages:?} vs tested {PAGES:?}");
}

#[test]
fn relative_links_resolve() {
    let docs = docs_dir();
    let mut files = vec![docs.join("README.md")];
    files.extend(PAGES.iter().map(|p| docs.join("guide").join(p)));
    for file in files {
        let md = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut in_fence = false;
        for (n, line) in md.lines().enumerate() {
            if line.starts_with("```") {
                in_fence = !in_fence;
                continue;
            }
            if in_fence {
                continue;
            }
            for piece in line.split("](").skip(1) {
                let target = piece.split(')').next().unwrap_or_default();
                let target = target.split('#').next().unwrap_or_default();
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let resolved = file.parent().expect("parent").join(target);
                assert!(
                    resolved.exists(),
                    "{}:{}: link target {target} does not exist",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

#[test]
fn matcher() {
    assert!(line_matches("a ... c", "a b c"));
    assert!(line_matches("a...", "abc"));
    assert!(!line_matches("a...d", "abc"));
    assert!(line_matches("x", "x"));
    assert!(!line_matches("x", "xy"));
    let expected = vec!["one".to_string(), "...".to_string(), "th...e".to_string()];
    assert_eq!(missing_line(&expected, "one\ntwo\nthree\n"), None);
    assert_eq!(missing_line(&expected, "three\none\n"), Some("th...e"));
    let steps = session("t", 1, &["$ ferry plan  # exit 2", "out", "", "$ ls"]);
    assert_eq!((steps[0].command.as_str(), steps[0].code), ("ferry plan", 2));
    assert_eq!(steps[0].expected, vec!["out"]);
    assert_eq!(steps[1].code, 0);
}

#[test]
fn testhosts_dirs_are_noted() {
    let mut g = TestHostsGuard { program: PathBuf::from("/nonexistent/ferry-testhosts"), dirs: Vec::new() };
    g.note("ferry-testhosts up --dir /tmp/x/hosts web1 web2");
    g.note("ferry-testhosts up --dir=/tmp/y a");
    g.note("ferry-testhosts up --dir /tmp/x/hosts web3");
    g.note("ferry-testhosts down --dir /tmp/z");
    g.note("ferry apply --yes");
    assert_eq!(g.dirs, ["/tmp/x/hosts", "/tmp/y"]);
    g.dirs.clear();
}
