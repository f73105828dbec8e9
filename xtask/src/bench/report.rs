//! The markdown report of `cargo xtask bench control`: the machine, one table with a column per
//! store backend, and how each number was measured.
//!
//! Pure: renders what it is given (numbers by name, as `bench_control` and the RSS readings
//! produced them) and never runs or reads anything itself.

use std::collections::BTreeMap;

use super::Counts;

/// Numbers measured for one backend, by name (`create_p50_ms`, `rss_idle_mib`, ...).
pub type Values = BTreeMap<String, f64>;

/// What one backend's run produced.
pub struct Column {
    /// `embedded` or `etcd`.
    pub backend: String,
    pub values: Values,
    /// The phases that failed and why (the numbers that were measured are still shown).
    pub errors: Vec<String>,
}

/// The machine the numbers were taken on.
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub date: String,
    pub filesystem: String,
    pub etcd_version: String,
}

/// How one row's cell is rendered from a column's values.
enum Cell {
    /// One number with this many decimals.
    One(&'static str, usize),
    /// `a / b`, both with this many decimals.
    Pair(&'static str, &'static str, usize),
    /// `a ms (b MiB)`.
    MillisecondsAndSize(&'static str, &'static str),
    /// Only meaningful for the etcd backend.
    EtcdOnly(&'static str, usize),
}

fn number(values: &Values, name: &str, decimals: usize) -> Option<String> {
    values
        .get(name)
        .filter(|value| value.is_finite())
        .map(|value| format!("{value:.decimals$}"))
}

impl Cell {
    fn render(&self, column: &Column) -> String {
        let values = &column.values;
        let rendered = match *self {
            Cell::One(name, decimals) => number(values, name, decimals),
            Cell::Pair(first, second, decimals) => number(values, first, decimals)
                .zip(number(values, second, decimals))
                .map(|(first, second)| format!("{first} / {second}")),
            Cell::MillisecondsAndSize(time, size) => number(values, time, 1)
                .zip(number(values, size, 1))
                .map(|(time, size)| format!("{time} ({size} MiB)")),
            Cell::EtcdOnly(_, _) if column.backend != "etcd" => return "n/a".to_owned(),
            Cell::EtcdOnly(name, decimals) => number(values, name, decimals),
        };
        match rendered {
            Some(text) => text,
            None if !column.errors.is_empty() => "failed".to_owned(),
            None => "–".to_owned(),
        }
    }
}

fn thousands(value: usize) -> String {
    let digits = value.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push('\u{202f}');
        }
        grouped.push(digit);
    }
    grouped
}

fn rows(counts: &Counts) -> Vec<(String, Cell)> {
    let latency = thousands(counts.latency_operations);
    let pods = thousands(counts.pods);
    let writes = thousands(counts.writes);
    vec![
        (
            format!("create latency p50 / p99 (ms; {latency} pods, one client)"),
            Cell::Pair("create_p50_ms", "create_p99_ms", 2),
        ),
        (
            format!("get latency p50 / p99 (ms; {latency} pods, one client)"),
            Cell::Pair("get_p50_ms", "get_p99_ms", 2),
        ),
        (
            format!("update latency p50 / p99 (ms; {latency} PUTs with resourceVersion)"),
            Cell::Pair("update_p50_ms", "update_p99_ms", 2),
        ),
        (
            format!("writes/s, 1 client ({writes} ConfigMap creates)"),
            Cell::One("single_writes_per_second", 0),
        ),
        (
            format!(
                "writes/s, {} concurrent clients ({writes} ConfigMap creates)",
                counts.write_clients
            ),
            Cell::One("concurrent_writes_per_second", 0),
        ),
        (
            format!(
                "watch delivery latency p50 / p99 (ms; {} watchers × {} changes)",
                thousands(counts.watchers),
                counts.watch_events
            ),
            Cell::Pair("watch_p50_ms", "watch_p99_ms", 1),
        ),
        (
            "watch deliveries received / expected".to_owned(),
            Cell::Pair("watch_deliveries", "watch_expected", 0),
        ),
        (
            format!("opening the {} watches (s)", thousands(counts.watchers)),
            Cell::One("watch_connect_seconds", 1),
        ),
        (
            format!(
                "creating {pods} pods, {} concurrent clients (pods/s)",
                counts.pod_clients
            ),
            Cell::One("pods_created_per_second", 0),
        ),
        (
            format!("list {pods} pods, unpaged (ms; response size)"),
            Cell::MillisecondsAndSize("list_full_ms", "list_full_mib"),
        ),
        (
            format!(
                "list {pods} pods, paged with limit={} (ms for all pages)",
                counts.page_size
            ),
            Cell::One("list_paged_ms", 1),
        ),
        (
            "skiff-control RSS idle, after start (MiB)".to_owned(),
            Cell::One("rss_idle_mib", 1),
        ),
        (
            format!("skiff-control RSS after {pods} pods (MiB)"),
            Cell::One("rss_pods_mib", 1),
        ),
        (
            "skiff-control RSS at the end, after the watch phase (MiB)".to_owned(),
            Cell::One("rss_end_mib", 1),
        ),
        (
            format!("etcd RSS after {pods} pods (MiB)"),
            Cell::EtcdOnly("etcd_rss_pods_mib", 1),
        ),
    ]
}

/// The whole report.
pub fn render(machine: &Machine, counts: &Counts, columns: &[Column]) -> String {
    let mut out = String::new();
    out.push_str("# skiff-control benchmark\n\n");
    out.push_str(&format!(
        "Produced by `cargo xtask bench control{}` on {}. Not a test: nothing is asserted; \
         numbers move with the machine and with what else runs on it.\n\n",
        if counts.quick { " --quick" } else { "" },
        machine.date
    ));
    out.push_str(&format!(
        "Machine: {} cores ({}), {} memory, kernel {}; data directories on {}; {}.\n\n",
        machine.cores,
        machine.cpu,
        machine.memory,
        machine.kernel,
        machine.filesystem,
        machine.etcd_version
    ));
    if counts.quick {
        out.push_str(
            "**Quick run**: the same phases with smaller counts (named in each row); not \
             comparable with a full run.\n\n",
        );
    }

    out.push_str("| measurement |");
    for column in columns {
        out.push_str(&format!(" {} |", column.backend));
    }
    out.push_str("\n|---|");
    for _ in columns {
        out.push_str("---:|");
    }
    out.push('\n');
    for (label, cell) in rows(counts) {
        out.push_str(&format!("| {label} |"));
        for column in columns {
            out.push_str(&format!(" {} |", cell.render(column)));
        }
        out.push('\n');
    }

    let failures: Vec<&Column> = columns
        .iter()
        .filter(|column| !column.errors.is_empty())
        .collect();
    if !failures.is_empty() {
        out.push_str("\n## Failures\n\nCells marked `failed` were not measured.\n\n");
        for column in failures {
            out.push_str(&format!("- **{}**:\n", column.backend));
            for error in &column.errors {
                out.push_str(&format!(
                    "\n  ```\n  {}\n  ```\n",
                    error.trim().replace('\n', "\n  ")
                ));
            }
        }
    }

    out.push_str(&method(machine, counts));
    out
}

fn method(machine: &Machine, counts: &Counts) -> String {
    format!(
        "\n## Method\n\n\
- Backends: **embedded** is skiff-control on its embedded store in a fresh data directory; \
  **etcd** is skiff-control with `--etcd-servers` pointing at a private single-member \
  etcd-server (Debian's, default settings) with a fresh data directory on the same \
  filesystem. Both are release builds on free 127.0.0.1 ports, started fresh for their column, \
  one after the other in the same invocation.\n\
- Client: `control/examples/bench_control.rs` (release), the standard Kubernetes REST API over \
  HTTPS with HTTP/1.1, one keep-alive connection per simulated client, authenticated with the \
  admin bearer token and trusting the cluster CA. It runs on the same machine and competes with \
  the server (and etcd) for the same {cores} cores; latencies include TLS, HTTP and JSON on both \
  sides.\n\
- Order per backend: start, RSS idle; create {pods} pods; RSS after the pods; list them; \
  latency; writes; watch; RSS at the end. Later phases therefore run with the pods stored.\n\
- Latency: {latency} pods created one after another by one client (POST), then each read \
  (GET), then each replaced (PUT of the object as read, with its `metadata.resourceVersion`, \
  one label added); p50/p99 are nearest-rank percentiles of the per-request times (request \
  sent → whole response read).\n\
- Writes/s: {writes} ConfigMap creates (one small data key), first over 1 connection, then \
  shared by {write_clients} connections sending concurrently; the number is creates divided by \
  the time from the first request to the last response.\n\
- Watch: {watchers} concurrent watch connections (`GET …/namespaces/bench-watch/configmaps\
  ?watch=1&resourceVersion=RV`, RV from a list), all established (response headers received) \
  plus 0.5 s before the first change; then one writer creates {events} ConfigMaps \
  {interval} ms apart, each carrying in `data.sent` the time just before its POST was sent. \
  Each watcher records, for each event, the time its bytes were read minus `data.sent` (one \
  monotonic clock, one process). The delay therefore includes the write itself (commit to the \
  store) and fan-out to every watcher; p50/p99 are over all deliveries, and a watcher that the \
  server closes early shows up as received < expected.\n\
- Pods: {pods} small pods (one busybox container) created by {pod_clients} concurrent \
  clients in namespace `bench`; then `GET /api/v1/namespaces/bench/pods` unpaged and paged \
  with `limit={page_size}` following `continue` to the end, each {rounds} times, median \
  reported; times are of the requests only (client-side JSON parsing excluded).\n\
- RSS: `VmRSS` from `/proc/PID/status` of the skiff-control process (and of etcd, for its \
  column): after it answers `/readyz` plus 1 s, after the pods are created (before they are \
  listed), and after all phases.\n",
        cores = machine.cores,
        latency = thousands(counts.latency_operations),
        writes = thousands(counts.writes),
        write_clients = counts.write_clients,
        watchers = thousands(counts.watchers),
        events = counts.watch_events,
        interval = counts.watch_interval_ms,
        pods = thousands(counts.pods),
        pod_clients = counts.pod_clients,
        page_size = counts.page_size,
        rounds = counts.list_rounds,
    )
}
