//! Unit tests of the engine without Nix or provider processes: a fake evaluator
//! ([`fake::FakeEvaluator`], scripted rounds and probes) for the evaluation side, and kinds
//! that neither plan nor read (so deciding calls no provider) for the planner; whole runs
//! (`run.rs`) with a scripted evaluator and a shell-script provider.

mod eval;
mod fake;
mod planner;
mod run;
