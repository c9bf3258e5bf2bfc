//! The resource graph: nodes and visible output -> input edges; DOT rendering.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub kind: String,
}

/// `from.output` flows into `to.input`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub from: String,
    pub output: String,
    pub to: String,
    pub input: String,
}

/// A round's edges into `to`: visible placeholders in its edges-mode inputs, and those reaching
/// an input only through derivations. `None` when the round did not compute edges for it.
pub(crate) fn edges_of(to: &str, r: &ferry_eval::ResourceEval) -> Option<Vec<Edge>> {
    let visible = r.edges.as_ref()?;
    let mut out = Vec::new();
    for (input, v) in visible.as_object().into_iter().flatten() {
        out.extend(ferry_eval::find_placeholders(v).into_iter().map(|p| (input, p)));
    }
    out.extend(r.hidden.iter().flat_map(|(input, ps)| ps.iter().map(move |p| (input, p.clone()))));
    Some(
        out.into_iter()
            .map(|(input, p)| Edge {
                from: p.resource,
                output: p.output,
                to: to.to_string(),
                input: input.clone(),
            })
            .collect(),
    )
}

impl Graph {
    /// Graphviz DOT text.
    pub fn to_dot(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("digraph ferry {\n  rankdir=LR;\n  node [shape=box];\n");
        for n in &self.nodes {
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n{}\"];\n",
                esc(&n.name),
                esc(&n.name),
                esc(&n.kind)
            ));
        }
        for e in &self.edges {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{} -> {}\"];\n",
                esc(&e.from),
                esc(&e.to),
                esc(&e.output),
                esc(&e.input)
            ));
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_escapes_and_labels() {
        let g = Graph {
            nodes: vec![Node { name: "a\"b".into(), kind: "local.file".into() }],
            edges: vec![Edge {
                from: "k".into(),
                output: "publicKey".into(),
                to: "a\"b".into(),
                input: "content".into(),
            }],
        };
        let d = g.to_dot();
        assert!(d.contains(r#""a\"b" [label="a\"b\nlocal.file"];"#), "{d}");
        assert!(d.contains(r#""k" -> "a\"b" [label="publicKey -> content"];"#), "{d}");
    }
}
