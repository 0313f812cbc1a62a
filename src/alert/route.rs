//! The routing tree, compiled: every node carries its inherited settings,
//! so matching an alert is a walk without lookups.
//!
//! Semantics are Alertmanager's: an alert enters at the root; the first
//! child whose matchers match takes it (and the walk goes on into that
//! child); `continue = true` lets later siblings take it as well; when no
//! child matches, the node itself takes it.

use std::collections::BTreeMap;

use super::config::{AlertingConfig, RouteConfig};
use super::matcher::{all_match, Matcher};

const SEC: i64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct RouteNode {
    /// Path in the tree: `0`, `0.1`, `0.1.0`. Part of group keys, so a
    /// group stays the same across restarts while the config does.
    pub id: String,
    matchers: Vec<Matcher>,
    pub receiver: Option<String>,
    /// `["..."]`: every label.
    pub group_by: Vec<String>,
    /// `None`: 0 for critical, 10 s otherwise (decided per group).
    pub group_wait: Option<i64>,
    pub group_interval: i64,
    pub repeat_interval: i64,
    pub send_resolved: bool,
    /// Levels 1.. of the escalation policy: (delay after the first page, receivers).
    pub escalation: Vec<(i64, Vec<String>)>,
    continue_matching: bool,
    children: Vec<RouteNode>,
}

pub struct Routing {
    root: RouteNode,
}

impl Routing {
    pub fn compile(config: &AlertingConfig) -> Routing {
        let root_defaults = RouteNode {
            id: "0".into(),
            matchers: Vec::new(),
            receiver: None,
            group_by: vec!["alertname".into()],
            group_wait: None,
            group_interval: 300 * SEC,
            repeat_interval: 4 * 3600 * SEC,
            send_resolved: true,
            escalation: Vec::new(),
            continue_matching: false,
            children: Vec::new(),
        };
        Routing {
            root: compile_node(&config.route, &root_defaults, "0".into(), config),
        }
    }

    /// The nodes that take an alert with these labels (at least the root).
    pub fn route(&self, labels: &BTreeMap<String, String>) -> Vec<&RouteNode> {
        let mut out = Vec::new();
        walk(&self.root, labels, &mut out);
        if out.is_empty() {
            out.push(&self.root);
        }
        out
    }

    /// A node by id; the root when the config no longer has it (a group
    /// persisted under an older config still gets paged somewhere).
    pub fn find(&self, id: &str) -> &RouteNode {
        fn find<'a>(node: &'a RouteNode, id: &str) -> Option<&'a RouteNode> {
            if node.id == id {
                return Some(node);
            }
            node.children.iter().find_map(|c| find(c, id))
        }
        find(&self.root, id).unwrap_or(&self.root)
    }
}

fn compile_node(
    config: &RouteConfig,
    parent: &RouteNode,
    id: String,
    all: &AlertingConfig,
) -> RouteNode {
    let escalation = match &config.escalation {
        Some(name) => all
            .escalation_policies
            .iter()
            .find(|p| &p.name == name)
            .map(|p| {
                p.levels
                    .iter()
                    .map(|l| (l.after.0, l.receivers.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        None => parent.escalation.clone(),
    };
    let mut node = RouteNode {
        id: id.clone(),
        matchers: config.matchers.clone(),
        receiver: config.receiver.clone().or_else(|| parent.receiver.clone()),
        group_by: config
            .group_by
            .clone()
            .unwrap_or_else(|| parent.group_by.clone()),
        group_wait: config.group_wait.map(|s| s.0).or(parent.group_wait),
        group_interval: config.group_interval.map_or(parent.group_interval, |s| s.0),
        repeat_interval: config
            .repeat_interval
            .map_or(parent.repeat_interval, |s| s.0),
        send_resolved: config.send_resolved.unwrap_or(parent.send_resolved),
        escalation,
        continue_matching: config.continue_matching,
        children: Vec::new(),
    };
    let children = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, child)| compile_node(child, &node, format!("{id}.{i}"), all))
        .collect();
    node.children = children;
    node
}

fn walk<'a>(node: &'a RouteNode, labels: &BTreeMap<String, String>, out: &mut Vec<&'a RouteNode>) {
    for child in &node.children {
        if !all_match(&child.matchers, labels) {
            continue;
        }
        let mark = out.len();
        walk(child, labels, out);
        if out.len() == mark {
            out.push(child);
        }
        if !child.continue_matching {
            break;
        }
    }
}

impl RouteNode {
    /// The group key and labels of an alert in this route.
    pub fn group_of(
        &self,
        tenant: &str,
        labels: &BTreeMap<String, String>,
    ) -> (String, BTreeMap<String, String>) {
        let mut group = BTreeMap::new();
        if self.group_by.iter().any(|l| l == "...") {
            group = labels.clone();
        } else {
            for name in &self.group_by {
                group.insert(name.clone(), labels.get(name).cloned().unwrap_or_default());
            }
        }
        group.insert("tenant".into(), tenant.to_string());
        let mut key = format!("{}/", self.id);
        for (i, (k, v)) in group.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        (key, group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::matcher::tests::labels;

    fn config(toml_text: &str) -> AlertingConfig {
        toml::from_str(toml_text).expect("config")
    }

    #[test]
    fn first_match_wins_continue_goes_on_and_children_inherit() {
        let c = config(
            r#"
            [route]
            receiver = "default"
            group_interval = "1m"
            [[route.routes]]
            matchers = ["severity=critical"]
            receiver = "pager"
            continue = true
            [[route.routes]]
            matchers = ["tenant=acme"]
            receiver = "acme"
            [[route.routes.routes]]
            matchers = ["alertname=~brute.*"]
            receiver = "acme-sec"
            [[route.routes]]
            matchers = ["tenant=acme"]
            receiver = "never"
            "#,
        );
        let r = Routing::compile(&c);
        let got = |l: &[(&str, &str)]| -> Vec<String> {
            r.route(&labels(l))
                .iter()
                .map(|n| n.receiver.clone().unwrap_or_default())
                .collect()
        };
        assert_eq!(got(&[("severity", "warning")]), vec!["default"]);
        assert_eq!(got(&[("severity", "critical")]), vec!["pager"]);
        assert_eq!(
            got(&[("severity", "critical"), ("tenant", "acme")]),
            vec!["pager", "acme"]
        );
        assert_eq!(
            got(&[("tenant", "acme"), ("alertname", "brute_force")]),
            vec!["acme-sec"]
        );
        let leaf = r.route(&labels(&[("tenant", "acme"), ("alertname", "brute")]))[0];
        assert_eq!(leaf.id, "0.1.0");
        assert_eq!(leaf.group_interval, 60 * SEC, "inherited");
        assert_eq!(r.find("0.1.0").id, "0.1.0");
        assert_eq!(r.find("9.9").id, "0", "unknown ids fall back to the root");
    }

    #[test]
    fn group_key_has_route_tenant_and_group_labels() {
        let r = Routing::compile(&AlertingConfig::default());
        let node = r.route(&labels(&[("alertname", "x")]))[0];
        let (key, group) =
            node.group_of("acme", &labels(&[("alertname", "x"), ("key", "1.2.3.4")]));
        assert_eq!(key, "0/alertname=x,tenant=acme");
        assert_eq!(group.len(), 2);
    }
}
