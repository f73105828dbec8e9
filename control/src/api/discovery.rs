//! Discovery documents: `/api`, `/apis`, the per-group and per-version resource lists
//! (legacy, unaggregated discovery, which kubectl and client libraries fall back to), and a
//! small OpenAPI v3 document per group/version that tells kubectl which operations accept
//! `fieldValidation` and `dryRun` (so it validates on the server instead of downloading
//! schemas).
//!
//! Owns rendering these documents from the static resource table; pure.

use serde_json::{Value, json};

use super::resources::{NAMED_GROUPS, RESOURCE_TYPES, ResourceType, in_group_version};

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api`
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_document(group: &str) -> Value {
    let version = RESOURCE_TYPES
        .iter()
        .find(|resource| resource.group == group)
        .map_or("v1", |resource| resource.version);
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [group_version.clone()],
        "preferredVersion": group_version,
    })
}

/// `/apis`
pub fn groups() -> Value {
    let groups: Vec<Value> = NAMED_GROUPS
        .iter()
        .map(|group| group_document(group))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if served.
pub fn group(group: &str) -> Option<Value> {
    NAMED_GROUPS.contains(&group).then(|| {
        let mut document = group_document(group);
        document["kind"] = json!("APIGroup");
        document["apiVersion"] = json!("v1");
        document
    })
}

fn resource_entries(resource: &ResourceType) -> Vec<Value> {
    let mut entries = vec![json!({
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": VERBS,
        "shortNames": resource.short_names,
        "categories": resource.categories,
    })];
    let mut sub = |name: &str, kind: &str, verbs: &[&str], extra: Value| {
        let mut entry = json!({
            "name": format!("{}/{name}", resource.plural),
            "singularName": "",
            "namespaced": resource.namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
            entry.extend(extra.clone());
        }
        entries.push(entry);
    };
    if resource.status {
        sub(
            "status",
            resource.kind,
            &["get", "patch", "update"],
            json!({}),
        );
    }
    if resource.scale {
        sub(
            "scale",
            "Scale",
            &["get", "patch", "update"],
            json!({"group": "autoscaling", "version": "v1"}),
        );
    }
    if resource.binding {
        sub("binding", "Binding", &["create"], json!({}));
    }
    if resource.plural == "pods" {
        // Served by `pod_log` through the pod's kubelet.
        sub("log", "Pod", &["get"], json!({}));
    }
    entries
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = in_group_version(group, version)
        .flat_map(resource_entries)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// The OpenAPI v3 path of a group/version: `api/v1`, `apis/apps/v1`.
fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group/version documents.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut seen = Vec::new();
    for resource in RESOURCE_TYPES {
        let path = openapi_path(resource.group, resource.version);
        if seen.contains(&path) {
            continue;
        }
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
        seen.push(path);
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{path}`: the operations of one group/version with their query parameters.
/// Schemas are not published, so kubectl uses its compiled-in types for strategic merge.
pub fn openapi_document(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => ("", *version),
        ["apis", group, version] => (*group, *version),
        _ => return None,
    };
    let mut paths = serde_json::Map::new();
    let parameter = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for resource in in_group_version(group, version) {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let collection = if resource.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
        } else {
            format!("{base}/{}", resource.plural)
        };
        let gvk =
            json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
        let write_parameters = json!([
            parameter("dryRun"),
            parameter("fieldManager"),
            parameter("fieldValidation"),
        ]);
        let operation = |action: &str| {
            json!({
                "operationId": format!("{action}{}", resource.kind),
                "parameters": write_parameters,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(collection.clone(), json!({"post": operation("post")}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"put": operation("put"), "patch": operation("patch")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::server::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_apps_lists_name_their_resources_and_subresources() {
        let core = resource_list("", "v1").expect("core is served");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|entry| entry["name"].as_str())
            .collect();
        for expected in [
            "pods",
            "pods/status",
            "pods/binding",
            "pods/log",
            "services",
            "namespaces",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let apps = resource_list("apps", "v1").expect("apps is served");
        assert!(
            apps["resources"]
                .as_array()
                .expect("a list")
                .iter()
                .any(
                    |entry| entry["name"] == "deployments/scale" && entry["group"] == "autoscaling"
                )
        );
        assert!(resource_list("apps", "v2").is_none());
        assert_eq!(
            groups()["groups"].as_array().map(Vec::len),
            Some(NAMED_GROUPS.len())
        );
    }

    #[test]
    fn openapi_names_field_validation_on_patch_operations() {
        let index = openapi_index();
        assert!(index["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
        let apps = openapi_document("apis/apps/v1").expect("served");
        let patch =
            &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .expect("a list")
                .iter()
                .any(|parameter| parameter["name"] == "fieldValidation")
        );
        assert!(openapi_document("apis/nothing/v1").is_none());
    }
}
