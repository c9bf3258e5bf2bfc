//! Resource rows: listing them, and the intent → success/failure lifecycle around provider
//! calls, refreshes and `ferry state rm`.
//!
//! A row keeps the inputs/outputs of the last success apart from the pending operation's
//! inputs, so a crash during an update never loses what is known to be deployed. Each method
//! is one immediate transaction that also appends its journal event.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::journal::short_message;
use crate::schema::sql_err;
use crate::time::now_rfc3339;
use crate::{Intent, Op, PendingOp, ResourceRecord, StateError, StateStore, Status, Success};

const COLUMNS: &str = "name, kind, provider, inputs, outputs, status, pending, pending_since, \
     last_error, dependencies, tags, sensitive_outputs, created_at, updated_at, last_applied_at, protect, deposed";

/// A row as stored, before its JSON columns are decoded.
struct RawRow {
    name: String,
    kind: String,
    provider: String,
    inputs: String,
    outputs: String,
    status: String,
    pending: Option<String>,
    pending_since: Option<String>,
    last_error: Option<String>,
    dependencies: String,
    tags: String,
    sensitive_outputs: String,
    created_at: String,
    updated_at: String,
    last_applied_at: Option<String>,
    protect: bool,
    deposed: Option<String>,
}

impl RawRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            name: r.get(0)?,
            kind: r.get(1)?,
            provider: r.get(2)?,
            inputs: r.get(3)?,
            outputs: r.get(4)?,
            status: r.get(5)?,
            pending: r.get(6)?,
            pending_since: r.get(7)?,
            last_error: r.get(8)?,
            dependencies: r.get(9)?,
            tags: r.get(10)?,
            sensitive_outputs: r.get(11)?,
            created_at: r.get(12)?,
            updated_at: r.get(13)?,
            last_applied_at: r.get(14)?,
            protect: r.get(15)?,
            deposed: r.get(16)?,
        })
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|e| StateError::Invalid(format!("cannot encode: {e}")))
}

impl StateStore {
    fn decode<T: DeserializeOwned>(&self, name: &str, column: &str, text: &str) -> Result<T, StateError> {
        serde_json::from_str(text)
            .map_err(|e| self.corrupt(format!("resource `{name}`, column {column}: {e}")))
    }

    fn decode_row(&self, raw: RawRow) -> Result<ResourceRecord, StateError> {
        let n = raw.name.as_str();
        let intent: Option<Intent> = match &raw.pending {
            Some(text) => Some(self.decode(n, "pending", text)?),
            None => None,
        };
        let status = match (raw.status.as_str(), &intent) {
            ("ready", None) => Status::Ready,
            ("pending", Some(i)) => Status::Pending(i.op.clone()),
            ("failed", Some(_)) => Status::Failed,
            (s, _) => {
                return Err(self
                    .corrupt(format!("resource `{n}`: status `{s}` does not match its pending operation")))
            }
        };
        Ok(ResourceRecord {
            kind: raw.kind,
            provider: self.decode(n, "provider", &raw.provider)?,
            inputs: self.decode(n, "inputs", &raw.inputs)?,
            outputs: self.decode(n, "outputs", &raw.outputs)?,
            status,
            pending: intent.map(|i| PendingOp {
                op: i.op,
                inputs: i.inputs,
                since: raw.pending_since.unwrap_or_default(),
            }),
            last_error: raw.last_error,
            dependencies: self.decode(n, "dependencies", &raw.dependencies)?,
            tags: self.decode(n, "tags", &raw.tags)?,
            sensitive_outputs: self.decode(n, "sensitive_outputs", &raw.sensitive_outputs)?,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
            last_applied_at: raw.last_applied_at,
            protect: raw.protect,
            deposed: match &raw.deposed {
                Some(text) => Some(self.decode(n, "deposed", text)?),
                None => None,
            },
            name: raw.name,
        })
    }

    /// Every recorded resource, ordered by name, including pending and failed ones.
    pub fn resources(&self) -> Result<Vec<ResourceRecord>, StateError> {
        let sql = format!("SELECT {COLUMNS} FROM resources ORDER BY name");
        let mut stmt = self.conn.prepare(&sql).map_err(sql_err(&self.path))?;
        let raws = stmt
            .query_map([], RawRow::from_row)
            .map_err(sql_err(&self.path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err(&self.path))?;
        raws.into_iter().map(|raw| self.decode_row(raw)).collect()
    }

    /// The record of resource `name`, if any.
    pub fn resource(&self, name: &str) -> Result<Option<ResourceRecord>, StateError> {
        let sql = format!("SELECT {COLUMNS} FROM resources WHERE name = ?1");
        let raw =
            self.conn.query_row(&sql, [name], RawRow::from_row).optional().map_err(sql_err(&self.path))?;
        raw.map(|raw| self.decode_row(raw)).transpose()
    }

    /// Inserts a full row; used for new resources and by import.
    pub(crate) fn insert_row(
        &self,
        conn: &Connection,
        rec: &ResourceRecord,
        pending: Option<&Intent>,
        pending_intent: Option<i64>,
    ) -> Result<(), StateError> {
        let status = match rec.status {
            Status::Ready => "ready",
            Status::Pending(_) => "pending",
            Status::Failed => "failed",
        };
        let pending_json = pending.map(to_json).transpose()?;
        conn.execute(
            &format!(
                "INSERT INTO resources ({COLUMNS}, pending_intent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ),
            params![
                rec.name,
                rec.kind,
                to_json(&rec.provider)?,
                to_json(&rec.inputs)?,
                to_json(&rec.outputs)?,
                status,
                pending_json,
                rec.pending.as_ref().map(|p| p.since.as_str()),
                rec.last_error,
                to_json(&rec.dependencies)?,
                to_json(&rec.tags)?,
                to_json(&rec.sensitive_outputs)?,
                rec.created_at,
                rec.updated_at,
                rec.last_applied_at,
                rec.protect,
                rec.deposed.as_ref().map(to_json).transpose()?,
                pending_intent,
            ],
        )
        .map_err(sql_err(&self.path))?;
        Ok(())
    }

    /// Before a provider call: marks `intent.resource` as pending `intent.op` with the inputs
    /// about to be sent, inserting the row if the resource is new (create/adopt), and appends an
    /// `intent` event. The previous inputs/outputs stay untouched until success. A pending
    /// operation left by a crashed run is superseded. Returns the intent id to pass to
    /// [`record_success`](Self::record_success) or [`record_failure`](Self::record_failure).
    ///
    /// Delete and actions need an existing record ([`StateError::UnknownResource`]).
    pub fn record_intent(&self, run: i64, intent: &Intent) -> Result<i64, StateError> {
        let name = intent.resource.as_str();
        if name.is_empty() {
            return Err(StateError::Invalid("intent without a resource name".into()));
        }
        let tx = self.write_tx()?;
        let exists = tx
            .query_row("SELECT 1 FROM resources WHERE name = ?1", [name], |_| Ok(()))
            .optional()
            .map_err(sql_err(&self.path))?
            .is_some();
        if !exists && matches!(intent.op, Op::Delete | Op::Action(_)) {
            return Err(StateError::UnknownResource { path: self.path.clone(), name: name.to_owned() });
        }
        let op = intent.op.to_string();
        let message = format!("{op} {}", intent.kind);
        let id = self.append_event(&tx, Some(run), Some(name), &op, "intent", &message)?;
        let now = now_rfc3339();
        if exists {
            tx.execute(
                "UPDATE resources SET status = 'pending', pending = ?1, pending_since = ?2,
                     pending_intent = ?3, updated_at = ?2 WHERE name = ?4",
                params![to_json(intent)?, now, id, name],
            )
            .map_err(sql_err(&self.path))?;
        } else {
            let rec = ResourceRecord {
                name: name.to_owned(),
                kind: intent.kind.clone(),
                provider: intent.provider.clone(),
                inputs: Map::new(),
                outputs: Map::new(),
                status: Status::Pending(intent.op.clone()),
                pending: Some(PendingOp {
                    op: intent.op.clone(),
                    inputs: Map::new(), // stored via the intent JSON
                    since: now.clone(),
                }),
                last_error: None,
                dependencies: intent.dependencies.clone(),
                tags: intent.tags.clone(),
                sensitive_outputs: intent.sensitive_outputs.clone(),
                created_at: now.clone(),
                updated_at: now,
                last_applied_at: None,
                protect: intent.protect,
                deposed: None,
            };
            self.insert_row(&tx, &rec, Some(intent), Some(id))?;
        }
        tx.commit().map_err(sql_err(&self.path))?;
        Ok(id)
    }

    /// Finds the resource whose *pending* (not failed) operation is `intent_id`.
    fn pending_intent(&self, conn: &Connection, intent_id: i64) -> Result<Intent, StateError> {
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT name, pending FROM resources
                 WHERE pending_intent = ?1 AND status = 'pending'",
                [intent_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql_err(&self.path))?;
        let Some((name, text)) = row else {
            return Err(StateError::Invalid(format!(
                "state database {}: intent {intent_id} is not pending (already recorded, or \
                 superseded by a later intent)",
                self.path.display()
            )));
        };
        self.decode(&name, "pending", &text)
    }

    /// After a successful provider call: for create/update/adopt stores the intent's inputs and
    /// `result.outputs` (and its kind, provider, dependencies, tags) with status ready; for
    /// delete removes the row; for an action replaces the outputs if given. Clears the pending
    /// operation and `last_error`; appends an `ok` event.
    pub fn record_success(&self, run: i64, intent_id: i64, result: &Success) -> Result<(), StateError> {
        let tx = self.write_tx()?;
        let intent = self.pending_intent(&tx, intent_id)?;
        let name = intent.resource.as_str();
        let now = now_rfc3339();
        let err = sql_err(&self.path);
        match &intent.op {
            Op::Delete if intent.deposed => {
                // The superseded object of a create-before-destroy replacement is gone; the
                // record (the new object) stays as it was.
                tx.execute(
                    "UPDATE resources SET deposed = NULL, status = 'ready', pending = NULL,
                         pending_since = NULL, pending_intent = NULL, last_error = NULL,
                         updated_at = ?1
                     WHERE name = ?2",
                    params![now, name],
                )
                .map_err(err)?;
            }
            Op::Delete => {
                tx.execute("DELETE FROM resources WHERE name = ?1", [name]).map_err(err)?;
            }
            Op::Create | Op::Update | Op::Adopt => {
                let outputs = result.outputs.clone().unwrap_or_default();
                // A create-before-destroy replacement keeps the object it replaces (the row's
                // last inputs and outputs, read before this UPDATE overwrites them) to delete.
                tx.execute(
                    "UPDATE resources SET kind = ?1, provider = ?2, inputs = ?3, outputs = ?4,
                         dependencies = ?5, tags = ?6, sensitive_outputs = ?7, status = 'ready',
                         pending = NULL, pending_since = NULL, pending_intent = NULL,
                         last_error = NULL, updated_at = ?8, last_applied_at = ?8, protect = ?10,
                         deposed = CASE WHEN ?11 AND last_applied_at IS NOT NULL
                             THEN json_object('inputs', json(inputs), 'outputs', json(outputs))
                             ELSE deposed END
                     WHERE name = ?9",
                    params![
                        intent.kind,
                        to_json(&intent.provider)?,
                        to_json(&intent.inputs)?,
                        to_json(&outputs)?,
                        to_json(&intent.dependencies)?,
                        to_json(&intent.tags)?,
                        to_json(&intent.sensitive_outputs)?,
                        now,
                        name,
                        intent.protect,
                        intent.deposed && intent.op == Op::Create,
                    ],
                )
                .map_err(err)?;
            }
            Op::Action(_) => {
                let outputs = result.outputs.as_ref().map(to_json).transpose()?;
                tx.execute(
                    "UPDATE resources SET outputs = COALESCE(?1, outputs), status = 'ready',
                         pending = NULL, pending_since = NULL, pending_intent = NULL,
                         last_error = NULL, updated_at = ?2, last_applied_at = ?2
                     WHERE name = ?3",
                    params![outputs, now, name],
                )
                .map_err(err)?;
            }
        }
        let op = intent.op.to_string();
        let message = format!("{op} succeeded");
        self.append_event(&tx, Some(run), Some(name), &op, "ok", &message)?;
        tx.commit().map_err(sql_err(&self.path))?;
        self.replaced.set(true);
        if intent.op == Op::Delete {
            // What the deleted row held (secrets among it) must not linger in the WAL.
            crate::schema::checkpoint(&self.conn, &self.path)?;
        }
        Ok(())
    }

    /// After a provider reported failure: the row stays with status failed, its last successful
    /// inputs/outputs untouched, and the attempted operation kept in `pending` (so the next run
    /// knows a create may have left something behind and can `read` before retrying).
    /// `message` is stored as `last_error`; the `error` event gets only its first line, cut to
    /// 200 characters.
    pub fn record_failure(&self, run: i64, intent_id: i64, message: &str) -> Result<(), StateError> {
        let tx = self.write_tx()?;
        let intent = self.pending_intent(&tx, intent_id)?;
        let name = intent.resource.as_str();
        tx.execute(
            "UPDATE resources SET status = 'failed', last_error = ?1, updated_at = ?2
             WHERE name = ?3",
            params![message, now_rfc3339(), name],
        )
        .map_err(sql_err(&self.path))?;
        let op = intent.op.to_string();
        let event = format!("{op} failed: {}", short_message(message));
        self.append_event(&tx, Some(run), Some(name), &op, "error", &event)?;
        tx.commit().map_err(sql_err(&self.path))
    }

    /// Refresh: replaces the outputs of `name` (from a provider `read`) and nothing else;
    /// appends a `refresh` event.
    pub fn record_outputs(
        &self,
        run: i64,
        name: &str,
        outputs: &Map<String, Value>,
    ) -> Result<(), StateError> {
        let tx = self.write_tx()?;
        let n = tx
            .execute(
                "UPDATE resources SET outputs = ?1, updated_at = ?2 WHERE name = ?3",
                params![to_json(outputs)?, now_rfc3339(), name],
            )
            .map_err(sql_err(&self.path))?;
        if n == 0 {
            return Err(StateError::UnknownResource { path: self.path.clone(), name: name.to_owned() });
        }
        self.append_event(&tx, Some(run), Some(name), "read", "refresh", "outputs refreshed")?;
        tx.commit().map_err(sql_err(&self.path))?;
        self.replaced.set(true);
        Ok(())
    }

    /// Records the `protect` flag of `name` (set or cleared in the deployment without any
    /// other change); appends a `protect` event when it changes. Returns whether it is recorded.
    pub fn set_protect(&self, name: &str, protect: bool) -> Result<bool, StateError> {
        let tx = self.write_tx()?;
        let n = tx
            .execute(
                "UPDATE resources SET protect = ?1, updated_at = ?2 WHERE name = ?3 AND protect != ?1",
                params![protect, now_rfc3339(), name],
            )
            .map_err(sql_err(&self.path))?;
        if n > 0 {
            let message = format!("protect = {protect}");
            self.append_event(&tx, None, Some(name), "protect", "ok", &message)?;
        }
        tx.commit().map_err(sql_err(&self.path))?;
        Ok(n > 0)
    }

    /// `ferry state rm`: forgets `name` without touching the real resource. Returns whether
    /// it was recorded; appends an `rm` event if so.
    pub fn remove(&self, name: &str) -> Result<bool, StateError> {
        let tx = self.write_tx()?;
        let n = tx.execute("DELETE FROM resources WHERE name = ?1", [name]).map_err(sql_err(&self.path))?;
        if n > 0 {
            let message = "removed from state; the real resource was not touched";
            self.append_event(&tx, None, Some(name), "rm", "rm", message)?;
        }
        tx.commit().map_err(sql_err(&self.path))?;
        crate::schema::checkpoint(&self.conn, &self.path)?;
        Ok(n > 0)
    }
}
