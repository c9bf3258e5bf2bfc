//! Progress renderers: three consumers of the engine's [`EngineEvent`] stream.
//!
//! - live lines on a terminal (indicatif): one spinner per running resource with its action,
//!   phase and elapsed time; finished lines stay with `✓`/`✗` and seconds;
//! - plain lines when stderr is not a terminal, one per event:
//!   `eval round 2: 3 pending`, `[file-a] create: started`, `[file-a] create: done (0.01s)`,
//!   `[file-b] failed: <error>`, `[file-c] skipped: <reason>`, `warning: <message>`;
//!   with `-v` also `[file-a] build: <message>` (phases), `[file-a] info: <message>` (logs) and
//!   `eval round 2: 3 ready (0.41s)`;
//! - `--log-format json`: each event as one JSON object per line.
//!
//! Everything goes to stderr (stdout carries the plan and reports). `-q` keeps only failures
//! and warnings. Events arrive from worker threads, so every renderer locks around its output.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ferry_engine::{EngineEvent, EventSink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{seconds, Palette};
use crate::cli::LogFormat;

/// Which renderer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Plain,
    Json,
}

impl Mode {
    /// Live lines only when stderr is a terminal and JSON was not asked for.
    pub fn choose(format: LogFormat, quiet: bool) -> Mode {
        match format {
            LogFormat::Json => Mode::Json,
            LogFormat::Text if !quiet && console::Term::stderr().is_term() => Mode::Live,
            LogFormat::Text => Mode::Plain,
        }
    }
}

/// The engine's event sink for one command.
pub struct Progress {
    verbose: u8,
    quiet: bool,
    out: Output,
}

enum Output {
    Live(Box<Live>),
    Lines(Mutex<Box<dyn Write + Send>>),
    Json(Mutex<Box<dyn Write + Send>>),
}

impl Progress {
    pub fn new(mode: Mode, verbose: u8, quiet: bool) -> Progress {
        let stderr = || Mutex::new(Box::new(std::io::stderr()) as Box<dyn Write + Send>);
        let out = match mode {
            Mode::Live => Output::Live(Box::new(Live::new())),
            Mode::Plain => Output::Lines(stderr()),
            Mode::Json => Output::Json(stderr()),
        };
        Progress { verbose, quiet, out }
    }

    /// Plain lines into `w` (for tests).
    #[cfg(test)]
    fn lines_into(w: Box<dyn Write + Send>, verbose: u8, quiet: bool) -> Progress {
        Progress { verbose, quiet, out: Output::Lines(Mutex::new(w)) }
    }

    /// Run `f` (printing, prompting) with live lines hidden so they do not interleave.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.out {
            Output::Live(live) => live.multi.suspend(f),
            _ => f(),
        }
    }

    /// Stop spinners still running (after an interrupt or an error).
    pub fn finish(&self) {
        if let Output::Live(live) = &self.out {
            live.finish();
        }
    }
}

impl EventSink for Progress {
    fn event(&self, ev: EngineEvent) {
        if self.quiet && !matches!(ev, EngineEvent::Failed { .. } | EngineEvent::Warning { .. }) {
            return;
        }
        match &self.out {
            Output::Live(live) => live.event(ev, self.verbose),
            Output::Lines(w) => {
                if let Some(line) = plain_line(&ev, self.verbose) {
                    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(w, "{line}");
                }
            }
            Output::Json(w) => {
                if let Ok(line) = serde_json::to_string(&ev) {
                    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(w, "{line}");
                }
            }
        }
    }
}

/// The plain-text line for an event, or `None` if it is shown only when verbose.
pub fn plain_line(ev: &EngineEvent, verbose: u8) -> Option<String> {
    let indent = |s: &str| s.trim_end().replace('\n', "\n    ");
    Some(match ev {
        EngineEvent::EvalStarted { round, pending } => {
            format!("eval round {round}: {}", pending_text(*pending))
        }
        EngineEvent::EvalFinished { round, ready, seconds: s } if verbose > 0 => {
            format!("eval round {round}: {ready} ready ({})", seconds(*s))
        }
        EngineEvent::EvalFinished { .. } => return None,
        EngineEvent::Started { resource, action } => format!("[{resource}] {}: started", action.verb()),
        EngineEvent::Phase { resource, phase, message } if verbose > 0 => {
            format!("[{resource}] {phase}: {}", indent(message))
        }
        EngineEvent::Log { resource, level, message } if verbose > 0 => {
            format!("[{resource}] {level}: {}", indent(message))
        }
        EngineEvent::Phase { .. } | EngineEvent::Log { .. } => return None,
        EngineEvent::Finished { resource, action, seconds: s } => {
            format!("[{resource}] {}: done ({})", action.verb(), seconds(*s))
        }
        EngineEvent::Failed { resource, error } => format!("[{resource}] failed: {}", indent(error)),
        EngineEvent::Skipped { resource, reason } => format!("[{resource}] skipped: {}", indent(reason)),
        EngineEvent::Warning { message } => format!("warning: {}", indent(message)),
    })
}

/// Live per-resource lines on a terminal.
struct Live {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, &'static str)>>,
    palette: Palette,
    /// Whether any line was drawn: indicatif leaves the cursor at the end of the last one.
    drawn: AtomicBool,
}

const TICK: Duration = Duration::from_millis(100);

impl Live {
    fn new() -> Live {
        Live {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
            palette: Palette::new(console::colors_enabled_stderr()),
            drawn: AtomicBool::new(false),
        }
    }

    fn running_style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed:>4}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn done_style() -> ProgressStyle {
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn start(&self, key: &str, label: &str, msg: String, verb: &'static str) {
        let pb = ProgressBar::new_spinner()
            .with_style(Self::running_style())
            .with_prefix(label.to_string())
            .with_message(msg);
        let pb = self.multi.add(pb);
        pb.enable_steady_tick(TICK);
        self.drawn.store(true, Ordering::Relaxed);
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((old, _)) = bars.insert(key.to_string(), (pb, verb)) {
            old.finish_and_clear();
        }
    }

    fn end(&self, key: &str, line: String) {
        let bar = self.bars.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        match bar {
            Some((pb, _)) => {
                pb.set_style(Self::done_style());
                pb.finish_with_message(line);
            }
            None => {
                let _ = self.multi.println(line);
            }
        }
    }

    fn event(&self, ev: EngineEvent, verbose: u8) {
        let p = &self.palette;
        match ev {
            EngineEvent::EvalStarted { round, pending } => {
                let key = format!("\0eval{round}");
                self.start(&key, "eval", format!("round {round}: {}", pending_text(pending)), "eval");
            }
            EngineEvent::EvalFinished { round, ready, seconds: s } => {
                let line =
                    format!("{} eval round {round}: {ready} ready ({})", p.green.apply_to("✓"), seconds(s));
                self.end(&format!("\0eval{round}"), line);
            }
            EngineEvent::Started { resource, action } => {
                self.start(&resource, &resource, action.verb().to_string(), action.verb());
            }
            EngineEvent::Phase { resource, phase, message } => {
                let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((pb, verb)) = bars.get(&resource) {
                    let message = message.lines().last().unwrap_or("");
                    pb.set_message(format!("{verb}: {phase} {message}"));
                }
                drop(bars);
                if verbose > 1 {
                    let _ = self.multi.println(format!("  [{resource}] {phase}: {message}"));
                }
            }
            EngineEvent::Log { resource, level, message } => {
                if verbose > 0 {
                    let _ = self.multi.println(format!("  [{resource}] {level}: {}", message.trim_end()));
                }
            }
            EngineEvent::Finished { resource, action, seconds: s } => {
                let line = format!(
                    "{} {} {} ({})",
                    p.green.apply_to("✓"),
                    p.bold.apply_to(&resource),
                    action.verb(),
                    seconds(s)
                );
                self.end(&resource, line);
            }
            EngineEvent::Failed { resource, error } => {
                let first = error.lines().next().unwrap_or("");
                let line = format!("{} {} failed: {first}", p.red.apply_to("✗"), p.bold.apply_to(&resource));
                self.end(&resource, line);
            }
            EngineEvent::Skipped { resource, reason } => {
                let line = format!("{}", p.dim.apply_to(format!("- {resource} skipped: {reason}")));
                self.end(&resource, line);
            }
            EngineEvent::Warning { message } => {
                let _ = self.multi.println(format!("{} {message}", p.yellow.apply_to("warning:")));
            }
        }
    }

    fn finish(&self) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for (key, (pb, verb)) in bars.drain() {
            let name = key.trim_start_matches('\0');
            pb.set_style(Self::done_style());
            pb.abandon_with_message(format!(
                "{} {name} {verb}: not finished",
                self.palette.yellow.apply_to("…")
            ));
        }
        drop(bars);
        // Every bar is finished, so nothing redraws after this: end the last line.
        if self.drawn.swap(false, Ordering::Relaxed) && !self.multi.is_hidden() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn pending_text(pending: Option<usize>) -> String {
    match pending {
        Some(n) => format!("{n} pending"),
        None => "all resources".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_engine::Action;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events() -> Vec<EngineEvent> {
        vec![
            EngineEvent::EvalStarted { round: 1, pending: Some(2) },
            EngineEvent::EvalFinished { round: 1, ready: 2, seconds: 0.41 },
            EngineEvent::Started { resource: "file-a".into(), action: Action::Create },
            EngineEvent::Phase {
                resource: "file-a".into(),
                phase: "write".into(),
                message: "writing".into(),
            },
            EngineEvent::Log { resource: "file-a".into(), level: "info".into(), message: "hello".into() },
            EngineEvent::Finished { resource: "file-a".into(), action: Action::Create, seconds: 0.012 },
            EngineEvent::Failed { resource: "file-b".into(), error: "permission denied\nat /x".into() },
            EngineEvent::Skipped { resource: "file-c".into(), reason: "file-b failed".into() },
            EngineEvent::Warning { message: "provider exited".into() },
        ]
    }

    fn run(verbose: u8, quiet: bool) -> String {
        let buf = Buf::default();
        let p = Progress::lines_into(Box::new(buf.clone()), verbose, quiet);
        for ev in events() {
            p.event(ev);
        }
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_lines() {
        assert_eq!(
            run(0, false),
            "eval round 1: 2 pending
[file-a] create: started
[file-a] create: done (0.01s)
[file-b] failed: permission denied
    at /x
[file-c] skipped: file-b failed
warning: provider exited
"
        );
    }

    #[test]
    fn verbose_adds_phases_and_logs() {
        let text = run(1, false);
        assert!(text.contains("eval round 1: 2 ready (0.41s)\n"), "{text}");
        assert!(text.contains("[file-a] write: writing\n"));
        assert!(text.contains("[file-a] info: hello\n"));
    }

    #[test]
    fn quiet_keeps_failures_and_warnings() {
        assert_eq!(run(0, true), "[file-b] failed: permission denied\n    at /x\nwarning: provider exited\n");
    }

    #[test]
    fn json_lines_are_events() {
        let line = serde_json::to_string(&events()[2]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "started");
        assert_eq!(v["resource"], "file-a");
    }

    #[test]
    fn live_renderer_survives_every_event() {
        // Hidden draw target: exercises the bookkeeping without a terminal.
        let live = Live {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            bars: Mutex::new(HashMap::new()),
            palette: Palette::plain(),
            drawn: AtomicBool::new(false),
        };
        for ev in events() {
            live.event(ev, 2);
        }
        live.event(EngineEvent::Started { resource: "x".into(), action: Action::Delete }, 0);
        live.finish();
        assert!(live.bars.lock().unwrap().is_empty());
    }
}
