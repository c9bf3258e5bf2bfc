//! The entry points that need no plan: named provider actions (`ferry machine rollback`…),
//! the resource graph, and the providers usable here.

use crate::session::{Access, Session};
use crate::*;

/// What `ferry providers` shows for one provider.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderDescription {
    pub name: String,
    pub command: String,
    pub version: String,
    pub kinds: Vec<ferry_protocol::KindSchema>,
}

impl Engine {
    /// Run the named provider action `action` on the recorded resource `name` (e.g. a
    /// machine's `rollback`). New outputs the action returns are recorded.
    pub fn action(
        &self,
        name: &str,
        action: &str,
        args: ferry_protocol::Object,
    ) -> Result<ferry_protocol::ActionResult, EngineError> {
        let s = Session::open(self, Access::Write)?;
        let rec = s.records.get(name).ok_or_else(|| {
            EngineError::Deployment(format!(
                "no resource `{name}` in state (see `ferry state list`; apply the deployment first)"
            ))
        })?;
        let kind = s.kind_of_record(rec).map_err(|e| EngineError::Provider(e.to_string()))?;
        if !kind.schema.actions.iter().any(|a| a.name == action) {
            let known: Vec<&str> = kind.schema.actions.iter().map(|a| a.name.as_str()).collect();
            return Err(EngineError::Deployment(format!(
                "{} ({}) has no action `{action}` (actions: {})",
                name,
                rec.kind,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
        let run = s.state().map(|st| st.begin_run(&self.cfg.command)).transpose()?.unwrap_or(0);
        let call = ferry_protocol::Call::Action(ferry_protocol::ActionParams {
            kind: kind.short(),
            resource: name.to_string(),
            action: action.to_string(),
            args,
            inputs: rec.inputs.clone(),
            outputs: rec.outputs.clone(),
        });
        let timeout = kind.timeout.max(self.cfg.call_timeout);
        let result = s.registry.call(&kind.command, call, timeout);
        let outcome = match result {
            Ok(v) => serde_json::from_value::<ferry_protocol::ActionResult>(v).map_err(|e| {
                EngineError::Provider(format!(
                    "provider {} sent a malformed action result: {e}",
                    kind.command.label
                ))
            }),
            Err(e) => Err(EngineError::Provider(s.redactor.text(&planner::describe(&e, &kind).to_string()))),
        };
        if let (Ok(r), Some(st)) = (&outcome, s.state()) {
            if let Some(outs) = &r.outputs {
                if outs != &rec.outputs {
                    st.record_outputs(run, name, outs)?;
                }
            }
        }
        if let Some(st) = s.state() {
            st.end_run(run, if outcome.is_ok() { "ok" } else { "failed" })?;
        }
        outcome
    }

    /// Resources and their visible output -> input edges (every output a placeholder).
    pub fn graph(&self) -> Result<graph::Graph, EngineError> {
        let mut s = Session::open(self, Access::Read)?;
        s.first_round(false)?;
        let nodes =
            s.decls.iter().map(|(n, d)| graph::Node { name: n.clone(), kind: d.kind.clone() }).collect();
        Ok(graph::Graph { nodes, edges: s.edges.iter().cloned().collect() })
    }

    /// Built-in providers, plus external providers the deployment declares (if it exists).
    pub fn providers(&self) -> Result<Vec<ProviderDescription>, EngineError> {
        let mut s = Session::open(self, Access::Read)?;
        if self.cfg.file.exists() {
            s.first_round(false)?;
        }
        let mut out: Vec<ProviderDescription> = s
            .registry
            .started()
            .iter()
            .map(|c| ProviderDescription {
                name: c.handshake.provider.clone(),
                command: c.command.label.clone(),
                version: c.handshake.version.clone(),
                kinds: c.handshake.kinds.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
