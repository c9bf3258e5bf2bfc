//! The plan: what would change, per resource, already redacted for display.

use ferry_protocol::Change;
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Noop,
    Create,
    Update,
    Replace,
    Delete,
    /// A resource whose creation was interrupted was found and is taken into state.
    Adopt,
}

impl Action {
    /// The plan symbol: `+`, `~`, `-/+`, `-`, ` `.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Noop => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::Adopt => "<=",
        }
    }
    pub fn verb(self) -> &'static str {
        match self {
            Action::Noop => "unchanged",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "destroy",
            Action::Adopt => "adopt",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanEntry {
    pub name: String,
    pub kind: String,
    pub action: Action,
    /// Inputs as they will be sent (sensitive ones shown as "(sensitive)"); for resources
    /// waiting on other outputs, the preview where unknown values read
    /// "(known after apply: NAME.OUTPUT)" or "(known after apply)".
    pub inputs: Map<String, Value>,
    /// Top-level inputs not known until other resources are applied.
    pub known_after_apply: Vec<String>,
    pub changes: Vec<Change>,
    /// Drift found by reading the real resource.
    pub drift: Vec<String>,
    pub reason: Option<String>,
    /// Resources whose outputs flow into this one (visible edges).
    pub depends_on: Vec<String>,
    pub tags: Vec<String>,
    /// Set when the resource cannot be planned (bad inputs, provider error).
    pub error: Option<String>,
    /// A replace that creates the new resource before deleting the old one (shown `+/-`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub create_before_destroy: bool,
}

impl PlanEntry {
    /// The plan symbol: [`Action::symbol`], but `+/-` for a create-before-destroy replace.
    pub fn symbol(&self) -> &'static str {
        if self.action == Action::Replace && self.create_before_destroy {
            "+/-"
        } else {
            self.action.symbol()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub adopt: usize,
    pub unchanged: usize,
}

impl Summary {
    pub fn add(&mut self, a: Action) {
        match a {
            Action::Noop => self.unchanged += 1,
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Replace => self.replace += 1,
            Action::Delete => self.delete += 1,
            Action::Adopt => self.adopt += 1,
        }
    }
    /// Takes back an [`add`](Self::add) (an entry that turned out to be an error).
    pub fn remove(&mut self, a: Action) {
        let n = match a {
            Action::Noop => &mut self.unchanged,
            Action::Create => &mut self.create,
            Action::Update => &mut self.update,
            Action::Replace => &mut self.replace,
            Action::Delete => &mut self.delete,
            Action::Adopt => &mut self.adopt,
        };
        *n = n.saturating_sub(1);
    }

    pub fn changes(&self) -> usize {
        self.create + self.update + self.replace + self.delete + self.adopt
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to create, {} to update, {} to replace, {} to destroy, {} unchanged",
            self.create, self.update, self.replace, self.delete, self.unchanged
        )?;
        if self.adopt > 0 {
            write!(f, ", {} to adopt", self.adopt)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub entries: Vec<PlanEntry>,
    pub summary: Summary,
}

impl Plan {
    pub fn has_errors(&self) -> bool {
        self.entries.iter().any(|e| e.error.is_some())
    }
}
