//! `ferry state export` / `import`: the whole resource table as one JSON document,
//! `{"version": EXPORT_VERSION, "resources": [ResourceRecord...]}`.
//!
//! Export carries full values, sensitive ones included; the caller redacts when printing.
//! Import validates the whole document before touching the database, then replaces every
//! resource in one transaction. The event journal and runs are neither exported nor replaced.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::schema::sql_err;
use crate::time::now_rfc3339;
use crate::{Intent, ResourceRecord, StateError, StateStore, Status};

/// Version of the export document format.
pub const EXPORT_VERSION: u64 = 1;

fn invalid(msg: String) -> StateError {
    StateError::Invalid(format!("invalid state import: {msg}"))
}

/// Checks one imported record and rebuilds the pending intent stored with it.
fn validate(i: usize, rec: &ResourceRecord) -> Result<Option<Intent>, StateError> {
    let at = format!("resources[{i}] (`{}`)", rec.name);
    if rec.name.is_empty() {
        return Err(invalid(format!("resources[{i}]: empty name")));
    }
    if rec.kind.is_empty() {
        return Err(invalid(format!("{at}: empty kind")));
    }
    let pending = match (&rec.status, &rec.pending) {
        (Status::Ready, None) => return Ok(None),
        (Status::Ready, Some(_)) => {
            return Err(invalid(format!("{at}: status ready with a pending operation")))
        }
        (Status::Pending(op), Some(p)) if *op != p.op => {
            return Err(invalid(format!("{at}: status pending {op} but the pending operation is {}", p.op)))
        }
        (_, Some(p)) => p,
        (status, None) => return Err(invalid(format!("{at}: status {status} needs a `pending` operation"))),
    };
    Ok(Some(Intent {
        resource: rec.name.clone(),
        op: pending.op.clone(),
        kind: rec.kind.clone(),
        provider: rec.provider.clone(),
        inputs: pending.inputs.clone(),
        dependencies: rec.dependencies.clone(),
        tags: rec.tags.clone(),
        sensitive_outputs: rec.sensitive_outputs.clone(),
        protect: rec.protect,
        deposed: false,
    }))
}

impl StateStore {
    /// All resources as `{"version": EXPORT_VERSION, "resources": [...]}`, with full values.
    pub fn export(&self) -> Result<Value, StateError> {
        let resources = self.resources()?;
        let resources = serde_json::to_value(resources)
            .map_err(|e| StateError::Invalid(format!("cannot encode export: {e}")))?;
        Ok(json!({ "version": EXPORT_VERSION, "resources": resources }))
    }

    /// Replaces all resources with those of `doc` (as produced by [`export`](Self::export)).
    /// The document is validated first: on any error ([`StateError::Invalid`], naming the
    /// offending entry) nothing changes. Returns the number of resources imported and appends
    /// an `import` event.
    pub fn import(&self, doc: &Value) -> Result<usize, StateError> {
        let obj = doc
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object with `version` and `resources`".into()))?;
        match obj.get("version").and_then(Value::as_u64) {
            Some(EXPORT_VERSION) => {}
            Some(v) if v > EXPORT_VERSION => {
                return Err(invalid(format!(
                    "document version {v} is newer than this ferry supports ({EXPORT_VERSION}); upgrade ferry"
                )))
            }
            _ => return Err(invalid(format!("`version` must be {EXPORT_VERSION}"))),
        }
        let items = obj
            .get("resources")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("`resources` must be an array".into()))?;

        let now = now_rfc3339();
        let mut seen = HashSet::new();
        let mut records = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut rec: ResourceRecord =
                serde_json::from_value(item.clone()).map_err(|e| invalid(format!("resources[{i}]: {e}")))?;
            let pending = validate(i, &rec)?;
            if !seen.insert(rec.name.clone()) {
                return Err(invalid(format!("resources[{i}]: duplicate name `{}`", rec.name)));
            }
            for stamp in [&mut rec.created_at, &mut rec.updated_at] {
                if stamp.is_empty() {
                    stamp.clone_from(&now);
                }
            }
            records.push((rec, pending));
        }

        let tx = self.write_tx()?;
        let replaced = tx.execute("DELETE FROM resources", []).map_err(sql_err(&self.path))?;
        for (rec, pending) in &records {
            self.insert_row(&tx, rec, pending.as_ref(), None)?;
        }
        let message = format!("imported {} resources, replacing {replaced}", records.len());
        self.append_event(&tx, None, None, "import", "import", &message)?;
        tx.commit().map_err(sql_err(&self.path))?;
        self.replaced.set(true);
        Ok(records.len())
    }
}
