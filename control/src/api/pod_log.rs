//! `GET /api/v1/namespaces/{namespace}/pods/{name}/log`: a container's log, read from the
//! kubelet of the pod's node (what `kubectl logs` calls).
//!
//! Owns the request's `PodLogOptions` query (`container`, `follow`, `previous`, `timestamps`,
//! `tailLines`, `limitBytes`, `sinceSeconds`, `sinceTime`, validated with upstream's texts),
//! choosing the container (the only one when none is named), finding the kubelet (the Node's
//! `InternalIP`, else `ExternalIP`, else `Hostname` address, and
//! `status.daemonEndpoints.kubeletEndpoint.Port`), calling its
//! `/containerLogs/{namespace}/{pod}/{container}` through [`KubeletClient`] and streaming the
//! body back unchanged (chunked while the kubelet follows). A kubelet error becomes a `Status`
//! with the kubelet's code and text, as kube-apiserver's location streamer reports it.
//!
//! Reads pods and nodes; never writes anything and never reads log files itself.

use std::net::IpAddr;

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use super::{
    errors::{ApiError, ApiResult},
    registry::Registry,
    resources,
};
use crate::kubelet_client::KubeletClient;

/// Upstream's default kubelet port, for a Node that does not publish one.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// At most this much of a kubelet's error body is read into the `Status` message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// The options of a `pods/log` request (upstream `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRequest {
    /// `container`; empty means the pod's only container.
    pub container: String,
    /// `follow`.
    pub follow: bool,
    /// `previous`.
    pub previous: bool,
    /// `timestamps`.
    pub timestamps: bool,
    /// `tailLines`.
    pub tail_lines: Option<i64>,
    /// `limitBytes`.
    pub limit_bytes: Option<i64>,
    /// `sinceSeconds`.
    pub since_seconds: Option<i64>,
    /// `sinceTime` (RFC 3339, passed on as given).
    pub since_time: Option<String>,
}

impl LogRequest {
    /// Parses and validates the query of a request for pod `name`'s log.
    ///
    /// # Errors
    /// `400 BadRequest` for values that are not booleans or integers; `422 Invalid` naming
    /// `PodLogOptions "<name>"` for values upstream's validation rejects.
    pub fn parse<'a>(
        name: &str,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> ApiResult<LogRequest> {
        let mut request = LogRequest::default();
        for (key, value) in params {
            match key {
                "container" => value.clone_into(&mut request.container),
                "follow" => request.follow = boolean(key, value)?,
                "previous" => request.previous = boolean(key, value)?,
                "timestamps" => request.timestamps = boolean(key, value)?,
                "tailLines" => request.tail_lines = Some(integer(key, value)?),
                "limitBytes" => request.limit_bytes = Some(integer(key, value)?),
                "sinceSeconds" => request.since_seconds = Some(integer(key, value)?),
                "sinceTime" => request.since_time = Some(value.to_owned()),
                _ => {}
            }
        }
        let mut errors = Vec::new();
        if let Some(lines) = request.tail_lines.filter(|lines| *lines < 0) {
            errors.push(format!(
                "tailLines: Invalid value: {lines}: must be greater than or equal to 0"
            ));
        }
        if let Some(bytes) = request.limit_bytes.filter(|bytes| *bytes < 1) {
            errors.push(format!(
                "limitBytes: Invalid value: {bytes}: must be greater than 0"
            ));
        }
        if request.since_seconds.is_some() && request.since_time.is_some() {
            errors.push(
                "<nil>: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                    .to_owned(),
            );
        }
        if let Some(seconds) = request.since_seconds.filter(|seconds| *seconds < 1) {
            errors.push(format!(
                "sinceSeconds: Invalid value: {seconds}: must be greater than 0"
            ));
        }
        if errors.is_empty() {
            return Ok(request);
        }
        let aggregate = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("[{}]", errors.join(", "))
        };
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("PodLogOptions \"{name}\" is invalid: {aggregate}"),
        ))
    }

    /// The kubelet's query string for these options (without `container`, which is in the path).
    #[must_use]
    pub fn kubelet_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if self.follow {
            pairs.push(("follow", "true".to_owned()));
        }
        if self.previous {
            pairs.push(("previous", "true".to_owned()));
        }
        if self.timestamps {
            pairs.push(("timestamps", "true".to_owned()));
        }
        if let Some(seconds) = self.since_seconds {
            pairs.push(("sinceSeconds", seconds.to_string()));
        }
        if let Some(time) = &self.since_time {
            pairs.push(("sinceTime", time.clone()));
        }
        if let Some(lines) = self.tail_lines {
            pairs.push(("tailLines", lines.to_string()));
        }
        if let Some(bytes) = self.limit_bytes {
            pairs.push(("limitBytes", bytes.to_string()));
        }
        pairs
            .iter()
            .map(|(key, value)| format!("{key}={}", encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn boolean(key: &str, value: &str) -> ApiResult<bool> {
    match value {
        "" | "true" | "True" | "TRUE" | "1" | "t" | "T" => Ok(true),
        "false" | "False" | "FALSE" | "0" | "f" | "F" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{key}: invalid value {value:?}: must be a boolean"
        ))),
    }
}

fn integer(key: &str, value: &str) -> ApiResult<i64> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{key}: invalid value {value:?}: must be an integer"
        ))
    })
}

/// Percent-encodes everything but unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The container a log request reads (upstream `validateContainer`): the named one, which must
/// exist, or the pod's only container.
///
/// # Errors
/// `400 BadRequest` with upstream's texts.
pub fn choose_container(pod: &Value, requested: &str) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names_of = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|container| container["name"].as_str().map(str::to_owned))
            .collect()
    };
    let containers = names_of("containers");
    let mut all = names_of("initContainers");
    all.extend(containers.iter().cloned());
    all.extend(names_of("ephemeralContainers"));
    if !requested.is_empty() {
        if all.iter().any(|container| container == requested) {
            return Ok(requested.to_owned());
        }
        return Err(ApiError::bad_request(format!(
            "container {requested} is not valid for pod {name}"
        )));
    }
    match containers.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// Where a Node's kubelet listens: its `InternalIP` (else `ExternalIP`, else a `Hostname` that is
/// an IP) and `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset).
#[must_use]
pub fn kubelet_endpoint(node: &Value) -> Option<(IpAddr, u16)> {
    let addresses = node["status"]["addresses"].as_array()?;
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|wanted| {
            addresses
                .iter()
                .filter(|address| address["type"] == *wanted)
                .find_map(|address| address["address"].as_str()?.parse::<IpAddr>().ok())
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((address, port))
}

/// Serves `pods/{name}/log` in `namespace`.
///
/// # Errors
/// `ApiError`s: the pod or node is missing (404), the container is ambiguous or unknown or the
/// pod has no node (400), the kubelet answered with an error (its code and text) or could not be
/// reached (500).
pub async fn serve<'a>(
    registry: &Registry,
    kubelet: &KubeletClient,
    namespace: &str,
    name: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> ApiResult<Response> {
    let request = LogRequest::parse(name, params)?;
    let (Some(pods), Some(nodes)) = (
        resources::lookup("", "v1", "pods"),
        resources::lookup("", "v1", "nodes"),
    ) else {
        return Err(ApiError::internal("pods and nodes are not served"));
    };
    let pod = registry.get(pods, Some(namespace), name).await?;
    let container = choose_container(&pod, &request.container)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let node = registry.get(nodes, None, node_name).await?;
    let (address, port) = kubelet_endpoint(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name:?} has no usable address")))?;
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    let query = request.kubelet_query();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let response = kubelet
        .get(address, port, &path)
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?;
    let code = response.status();
    if code != StatusCode::OK {
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        return Err(kubelet_error(code, &String::from_utf8_lossy(&body)));
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::new(response.into_body()),
    )
        .into_response())
}

/// A kubelet's error answer as a `Status`: its code, the matching reason and its text.
fn kubelet_error(code: StatusCode, text: &str) -> ApiError {
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        _ => "InternalError",
    };
    let text = text.trim();
    let message = if text.is_empty() {
        format!(
            "the server responded with the status code {} but did not return more information",
            code.as_u16()
        )
    } else {
        text.to_owned()
    };
    ApiError::new(code, reason, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(query: &[(&str, &str)]) -> ApiResult<LogRequest> {
        LogRequest::parse("web", query.iter().copied())
    }

    #[test]
    fn options_parse_and_become_the_kubelet_query() {
        let request = parse(&[
            ("container", "main"),
            ("follow", "true"),
            ("tailLines", "3"),
            ("timestamps", "true"),
            ("sinceTime", "2024-05-01T10:00:00+02:00"),
        ])
        .expect("valid");
        assert_eq!(request.container, "main");
        assert_eq!(
            request.kubelet_query(),
            "follow=true&timestamps=true&sinceTime=2024-05-01T10%3A00%3A00%2B02%3A00&tailLines=3"
        );
        assert_eq!(parse(&[]).expect("valid").kubelet_query(), "");
    }

    #[test]
    fn invalid_options_use_upstream_texts() {
        let error = parse(&[("tailLines", "-1")]).expect_err("invalid");
        assert_eq!(error.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            error.message,
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            parse(&[("tailLines", "x")]).expect_err("not a number").code,
            StatusCode::BAD_REQUEST
        );
        assert!(
            parse(&[("sinceSeconds", "5"), ("sinceTime", "2024-05-01T10:00:00Z")])
                .expect_err("both")
                .message
                .contains("at most one of `sinceTime` or `sinceSeconds` may be specified")
        );
    }

    #[test]
    fn the_container_is_the_only_one_or_must_be_named() {
        let one = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "main"}]}});
        assert_eq!(choose_container(&one, "").expect("the only one"), "main");
        assert_eq!(
            choose_container(&one, "other")
                .expect_err("unknown")
                .message,
            "container other is not valid for pod web"
        );
        let two = json!({"metadata": {"name": "web"}, "spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}],
        }});
        let error = choose_container(&two, "").expect_err("ambiguous");
        assert_eq!(error.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            error.message,
            "a container name must be specified for pod web, choose one of: [init a b]"
        );
        assert_eq!(choose_container(&two, "init").expect("named"), "init");
    }

    #[test]
    fn the_kubelet_is_found_by_internal_ip_and_published_port() {
        let node = json!({"status": {
            "addresses": [
                {"type": "Hostname", "address": "node-a"},
                {"type": "InternalIP", "address": "10.0.0.7"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}},
        }});
        assert_eq!(
            kubelet_endpoint(&node),
            Some((IpAddr::from([10, 0, 0, 7]), 12345))
        );
        let bare =
            json!({"status": {"addresses": [{"type": "ExternalIP", "address": "192.0.2.1"}]}});
        assert_eq!(
            kubelet_endpoint(&bare),
            Some((IpAddr::from([192, 0, 2, 1]), DEFAULT_KUBELET_PORT))
        );
        assert_eq!(kubelet_endpoint(&json!({"status": {}})), None);
    }

    #[test]
    fn kubelet_errors_keep_their_code_and_text() {
        let error = kubelet_error(
            StatusCode::BAD_REQUEST,
            "container \"main\" in pod \"web\" is waiting to start: ContainerCreating\n",
        );
        assert_eq!(error.reason, "BadRequest");
        assert_eq!(
            error.message,
            "container \"main\" in pod \"web\" is waiting to start: ContainerCreating"
        );
    }
}
