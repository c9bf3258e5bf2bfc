//! The lifecycle check of one kind: plan without prior, create (every declared output
//! present), read and adoption read where supported, then delete — a created probe resource is
//! deleted even when a later step fails.

use super::*;

pub(super) fn check_lifecycle(
    p: &mut ProviderProcess,
    hs: &HandshakeResult,
    kind: &str,
    inputs: &Object,
    timeout: Duration,
) -> Result<String, String> {
    let Some(schema) = hs.kinds.iter().find(|k| k.name == kind) else {
        return Err(format!("the provider declares no kind {kind:?}"));
    };
    let resource = format!("{PROBE_RESOURCE}-{kind}");
    let mut steps = Vec::new();
    let mut lifecycle = Lifecycle { p, kind, resource: &resource, inputs, timeout };

    let plan = lifecycle.plan(None).map_err(|e| format!("plan without prior: {e}"))?;
    if plan.action != PlanAction::Create {
        return Err(format!("plan without prior said {:?}, expected create", plan.action));
    }
    steps.push("plan → create");

    let outputs = lifecycle.create().map_err(|e| format!("create: {e}"))?;
    // From here on, delete what was created if a later step fails.
    let result = lifecycle.after_create(schema, &outputs, &mut steps);
    if result.is_err() && !steps.contains(&"delete") {
        let _ = lifecycle.delete(&outputs);
    }
    result?;
    Ok(steps.join(", "))
}

struct Lifecycle<'a> {
    p: &'a mut ProviderProcess,
    kind: &'a str,
    resource: &'a str,
    inputs: &'a Object,
    timeout: Duration,
}

impl Lifecycle<'_> {
    fn result<T: serde::de::DeserializeOwned>(&mut self, call: Call) -> Result<T, String> {
        match self.p.call(call, self.timeout) {
            Ok(Reply { outcome: Outcome::Result(v), .. }) => serde_json::from_value(v.clone())
                .map_err(|e| format!("result does not have the right shape ({e}): {v}")),
            Ok(Reply { outcome: Outcome::Error(e), .. }) => Err(format!("error: {}", describe(&e))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn plan(&mut self, prior: Option<Prior>) -> Result<PlanResult, String> {
        self.result(Call::Plan(PlanParams {
            kind: self.kind.into(),
            resource: self.resource.into(),
            inputs: self.inputs.clone(),
            prior,
        }))
    }

    fn create(&mut self) -> Result<Object, String> {
        let r: OutputsResult = self.result(Call::Create(CreateParams {
            kind: self.kind.into(),
            resource: self.resource.into(),
            inputs: self.inputs.clone(),
            context: Default::default(),
        }))?;
        Ok(r.outputs)
    }

    fn read(&mut self, outputs: Option<&Object>) -> Result<ReadResult, String> {
        self.result(Call::Read(ReadParams {
            kind: self.kind.into(),
            resource: self.resource.into(),
            inputs: self.inputs.clone(),
            outputs: outputs.cloned(),
        }))
    }

    fn delete(&mut self, outputs: &Object) -> Result<(), String> {
        let _: Value = self.result(Call::Delete(DeleteParams {
            kind: self.kind.into(),
            resource: self.resource.into(),
            inputs: self.inputs.clone(),
            outputs: outputs.clone(),
        }))?;
        Ok(())
    }

    fn after_create(
        &mut self,
        schema: &KindSchema,
        outputs: &Object,
        steps: &mut Vec<&'static str>,
    ) -> Result<(), String> {
        let mut expected = schema.output_names();
        if let Some(extra) = schema.output_names_input.as_ref().and_then(|i| self.inputs.get(i)) {
            expected
                .extend(extra.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string));
        }
        let missing: Vec<&String> = expected.iter().filter(|n| !outputs.contains_key(*n)).collect();
        if !missing.is_empty() {
            return Err(format!("create returned outputs without the declared {missing:?}"));
        }
        steps.push("create (all outputs)");

        let can_read = schema.supports(Operation::Read);
        if can_read {
            let r = self.read(Some(outputs)).map_err(|e| format!("read after create: {e}"))?;
            if !r.exists {
                return Err("read after create said exists: false".into());
            }
            steps.push("read → exists");
            let adopted = self.read(None).map_err(|e| format!("read with outputs null (adoption): {e}"))?;
            steps.push(if adopted.exists {
                "adoption read → exists"
            } else {
                "adoption read → not found (no adoption)"
            });
        }

        let prior = Prior { inputs: self.inputs.clone(), outputs: outputs.clone() };
        let plan = self.plan(Some(prior)).map_err(|e| format!("plan with unchanged inputs: {e}"))?;
        if plan.action != PlanAction::Noop {
            return Err(format!("plan with unchanged inputs said {:?}, expected noop", plan.action));
        }
        steps.push("plan unchanged → noop");

        self.delete(outputs).map_err(|e| format!("delete: {e}"))?;
        steps.push("delete");

        if can_read {
            let r = self.read(Some(outputs)).map_err(|e| format!("read after delete: {e}"))?;
            if r.exists {
                return Err("read after delete said exists: true".into());
            }
            steps.push("read → gone");
        }
        Ok(())
    }
}
