//! CRI container log files, read for `/containerLogs` (`kubectl logs`).
//!
//! Owns the format the runtime writes, one entry per line:
//! `<RFC 3339 time> <stdout|stderr> <tags> <text>`, where the first tag is `F` for a full line or
//! `P` for a part of a longer line that continues in the stream's next entry; the joining of those
//! parts into lines (per stream, as stdout and stderr interleave); the `tailLines`, `sinceTime`,
//! `timestamps` and `limitBytes` options of a log request ([`LogOptions`]); and following a log
//! file as it grows, is truncated or is rotated ([`LogFollower`]). Malformed entries are skipped
//! and counted, as upstream's kubelet skips them.
//!
//! Pure apart from reading the file it is pointed at. Never writes, rotates or deletes a log (the
//! runtime writes them), never waits or sleeps (a follower of a log decides how often to look).

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use k8s_openapi::jiff::Timestamp;

/// Which of the container's output streams a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The stream's name as the log file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One entry (one physical line) of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The time as the runtime wrote it (RFC 3339 with up to nanoseconds, any UTC offset).
    pub time: String,
    /// The same time, parsed.
    pub timestamp: Timestamp,
    /// The stream the text was written to.
    pub stream: Stream,
    /// `true` for a `P` entry: the line continues in the stream's next entry.
    pub partial: bool,
    /// The text, without the newline.
    pub text: Vec<u8>,
}

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CRI log entry: {0}")]
pub struct MalformedEntry(&'static str);

/// Parses one entry, without its newline.
pub fn parse_entry(line: &[u8]) -> Result<LogEntry, MalformedEntry> {
    let mut fields = line.splitn(4, |byte| *byte == b' ');
    let time = fields.next().unwrap_or_default();
    let time = std::str::from_utf8(time).map_err(|_| MalformedEntry("the time is not UTF-8"))?;
    let timestamp: Timestamp = time
        .parse()
        .map_err(|_| MalformedEntry("the time is not RFC 3339"))?;
    let stream = match fields.next() {
        Some(b"stdout") => Stream::Stdout,
        Some(b"stderr") => Stream::Stderr,
        Some(_) => return Err(MalformedEntry("the stream is neither stdout nor stderr")),
        None => return Err(MalformedEntry("no stream")),
    };
    let tags = fields
        .next()
        .filter(|tags| !tags.is_empty())
        .ok_or(MalformedEntry("no tags"))?;
    // Tags are `:`-separated; the first says full or partial. Like upstream, anything but `P` is
    // a full line.
    let partial = tags.split(|byte| *byte == b':').next() == Some(b"P");
    // containerd always writes the space before the text; an empty line may lose it to editors.
    let text = fields.next().unwrap_or_default().to_vec();
    Ok(LogEntry {
        time: time.to_owned(),
        timestamp,
        stream,
        partial,
        text,
    })
}

/// One line of the container's output: one full entry, or partial entries joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The time of the line's first entry, as the runtime wrote it.
    pub time: String,
    /// The same time, parsed.
    pub timestamp: Timestamp,
    /// The stream the line was written to.
    pub stream: Stream,
    /// The text, without the newline.
    pub text: Vec<u8>,
    /// `false` when the runtime has not written the line's end yet (only partial entries so far).
    pub complete: bool,
}

impl LogLine {
    /// Appends the line as `kubectl logs` shows it: with `timestamps`, the time (nanoseconds
    /// always written out, the runtime's UTC offset kept, as upstream's kubelet formats it) and a
    /// space first; a newline at the end unless the line is incomplete.
    pub fn write_to(&self, out: &mut Vec<u8>, timestamps: bool) {
        if timestamps {
            out.extend_from_slice(fixed_nanoseconds(&self.time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.text);
        if self.complete {
            out.push(b'\n');
        }
    }
}

/// `time` (RFC 3339) with its fraction of a second written out to nine digits, like Go's
/// `2006-01-02T15:04:05.000000000Z07:00` that upstream's kubelet uses for `timestamps=true`.
fn fixed_nanoseconds(time: &str) -> String {
    // `YYYY-MM-DDThh:mm:ss` is 19 ASCII characters; the fraction, if any, follows.
    let (Some(head), Some(rest)) = (time.get(..19), time.get(19..)) else {
        return time.to_owned();
    };
    let (digits, zone) = match rest.strip_prefix('.') {
        Some(fraction) => {
            let end = fraction
                .find(|character: char| !character.is_ascii_digit())
                .unwrap_or(fraction.len());
            fraction.split_at(end)
        }
        None => ("", rest),
    };
    let digits = digits.get(..9).unwrap_or(digits);
    format!("{head}.{digits:0<9}{zone}")
}

/// Joins partial entries into lines, separately per stream.
#[derive(Debug, Default, Clone)]
struct Joiner {
    stdout: Option<LogLine>,
    stderr: Option<LogLine>,
}

impl Joiner {
    /// Adds an entry; returns the line it completes.
    fn push(&mut self, entry: LogEntry) -> Option<LogLine> {
        let pending = match entry.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let mut line = match pending.take() {
            Some(mut line) => {
                line.text.extend_from_slice(&entry.text);
                line
            }
            None => LogLine {
                time: entry.time,
                timestamp: entry.timestamp,
                stream: entry.stream,
                text: entry.text,
                complete: false,
            },
        };
        if entry.partial {
            *pending = Some(line);
            None
        } else {
            line.complete = true;
            Some(line)
        }
    }

    /// The lines begun but not finished, oldest first; forgets them.
    fn take_pending(&mut self) -> Vec<LogLine> {
        let mut pending: Vec<LogLine> = [self.stdout.take(), self.stderr.take()]
            .into_iter()
            .flatten()
            .collect();
        pending.sort_by_key(|line| line.timestamp);
        pending
    }
}

/// Splits `buffer` at its last newline: feeds every complete entry before it to `joiner`
/// (appending finished lines to `lines`, counting malformed entries in `malformed`) and returns
/// how many bytes were consumed. Bytes after the last newline are an entry still being written.
fn consume_entries(
    buffer: &[u8],
    joiner: &mut Joiner,
    lines: &mut Vec<LogLine>,
    malformed: &mut u64,
) -> usize {
    let Some(end) = buffer.iter().rposition(|byte| *byte == b'\n') else {
        return 0;
    };
    for raw in buffer[..end].split(|byte| *byte == b'\n') {
        match parse_entry(raw) {
            Ok(entry) => lines.extend(joiner.push(entry)),
            Err(_) => *malformed += 1,
        }
    }
    end + 1
}

/// The lines of a whole log file's `content`. Malformed entries are skipped; an unterminated last
/// entry is ignored (the runtime is still writing it); lines whose end was not written yet come
/// last, marked incomplete.
pub fn parse_log(content: &[u8]) -> Vec<LogLine> {
    let mut joiner = Joiner::default();
    let mut lines = Vec::new();
    let mut malformed = 0;
    consume_entries(content, &mut joiner, &mut lines, &mut malformed);
    lines.extend(joiner.take_pending());
    lines
}

/// Reads and parses the log file at `path` (see [`parse_log`]).
pub fn read_log_file(path: &Path) -> Result<Vec<LogLine>, LogError> {
    let content = std::fs::read(path).map_err(|source| LogError {
        action: "reading",
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_log(&content))
}

/// The last `count` lines of `lines` (`tailLines`).
pub fn tail_lines(lines: &[LogLine], count: usize) -> &[LogLine] {
    &lines[lines.len().saturating_sub(count)..]
}

/// The options of a log request that shape its output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last this many lines (`tailLines`); all when `None`.
    pub tail_lines: Option<usize>,
    /// Only lines written at or after this time (`sinceTime`, or now minus `sinceSeconds`).
    pub since: Option<Timestamp>,
    /// Each line prefixed with its time (`timestamps`).
    pub timestamps: bool,
    /// At most this many bytes of output (`limitBytes`); the last line may be cut.
    pub limit_bytes: Option<usize>,
}

/// `lines` as a log request with `options` returns them. As upstream's kubelet does, the tail
/// is taken first and `since` filters what it leaves.
pub fn render(lines: &[LogLine], options: &LogOptions) -> Vec<u8> {
    let lines = match options.tail_lines {
        Some(count) => tail_lines(lines, count),
        None => lines,
    };
    let mut out = Vec::new();
    for line in lines {
        if options.since.is_some_and(|since| line.timestamp < since) {
            continue;
        }
        line.write_to(&mut out, options.timestamps);
        if options.limit_bytes.is_some_and(|limit| out.len() >= limit) {
            break;
        }
    }
    if let Some(limit) = options.limit_bytes {
        out.truncate(limit);
    }
    out
}

/// Reading a log file failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} the container log {path}: {source}")]
pub struct LogError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Follows a container log file: each [`LogFollower::read_new`] returns the lines completed since
/// the previous one. Survives the file not existing yet, being truncated (starts over) and being
/// rotated (finishes the old file, then reads the new one from its start).
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    /// The open file and its (device, inode), once it exists.
    file: Option<(File, (u64, u64))>,
    /// Bytes of the open file read so far.
    position: u64,
    /// Read bytes after the last newline: an entry the runtime is still writing.
    unterminated: Vec<u8>,
    joiner: Joiner,
    malformed: u64,
}

impl LogFollower {
    /// A follower of `path` from its start.
    pub fn new(path: impl Into<PathBuf>) -> LogFollower {
        LogFollower::starting_at(path, 0)
    }

    /// A follower of `path` from byte `offset`, which must be the start of an entry (an earlier
    /// [`LogFollower::offset`], or the file's length).
    pub fn starting_at(path: impl Into<PathBuf>, offset: u64) -> LogFollower {
        LogFollower {
            path: path.into(),
            file: None,
            position: offset,
            unterminated: Vec::new(),
            joiner: Joiner::default(),
            malformed: 0,
        }
    }

    /// Where the next entry starts in the current file: everything before it has been returned
    /// (or is held as the start of a partial line).
    pub fn offset(&self) -> u64 {
        self.position
            .saturating_sub(u64::try_from(self.unterminated.len()).unwrap_or(u64::MAX))
    }

    /// How many malformed entries were skipped.
    pub fn malformed_entries(&self) -> u64 {
        self.malformed
    }

    /// The lines completed since the last call, in file order. No lines (and no error) while the
    /// file does not exist.
    pub fn read_new(&mut self) -> Result<Vec<LogLine>, LogError> {
        let mut lines = Vec::new();
        if self.file.is_none() && !self.open()? {
            return Ok(lines);
        }
        if self.rotated()? {
            // The runtime reopens the path only after the rename, so the old file is final now.
            self.read_to_end(&mut lines)?;
            self.file = None;
            self.position = 0;
            self.unterminated.clear();
            if !self.open()? {
                return Ok(lines);
            }
        }
        self.read_to_end(&mut lines)?;
        Ok(lines)
    }

    /// Lines begun but not finished (only partial entries so far), marked incomplete; for when
    /// the container has exited and no more entries will come. Forgets them.
    pub fn take_incomplete(&mut self) -> Vec<LogLine> {
        self.joiner.take_pending()
    }

    /// Opens the file at `path`, seeking to the current position; `false` when it does not exist.
    fn open(&mut self) -> Result<bool, LogError> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(self.error("opening", source)),
        };
        let metadata = file
            .metadata()
            .map_err(|source| self.error("inspecting", source))?;
        if metadata.len() < self.position {
            self.position = 0;
        }
        file.seek(SeekFrom::Start(self.position))
            .map_err(|source| self.error("seeking in", source))?;
        self.file = Some((file, (metadata.dev(), metadata.ino())));
        Ok(true)
    }

    /// Whether `path` now names another file than the open one.
    fn rotated(&self) -> Result<bool, LogError> {
        let Some((_, identity)) = &self.file else {
            return Ok(false);
        };
        match std::fs::metadata(&self.path) {
            Ok(metadata) => Ok((metadata.dev(), metadata.ino()) != *identity),
            // Between the rename and the runtime's reopen: keep reading the old file.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(self.error("inspecting", source)),
        }
    }

    /// Reads the open file to its end, appending completed lines to `lines`. Starts over when
    /// the file was truncated below the position read.
    fn read_to_end(&mut self, lines: &mut Vec<LogLine>) -> Result<(), LogError> {
        let Some((file, _)) = &mut self.file else {
            return Ok(());
        };
        let length = file.metadata().map(|metadata| metadata.len());
        if length.as_ref().is_ok_and(|length| *length < self.position) {
            file.seek(SeekFrom::Start(0))
                .map_err(|source| error(&self.path, "seeking in", source))?;
            self.position = 0;
            self.unterminated.clear();
            self.joiner = Joiner::default();
        }
        let read = file
            .read_to_end(&mut self.unterminated)
            .map_err(|source| error(&self.path, "reading", source))?;
        self.position += u64::try_from(read).unwrap_or(u64::MAX);
        let consumed = consume_entries(
            &self.unterminated,
            &mut self.joiner,
            lines,
            &mut self.malformed,
        );
        self.unterminated.drain(..consumed);
        Ok(())
    }

    fn error(&self, action: &'static str, source: std::io::Error) -> LogError {
        error(&self.path, action, source)
    }
}

fn error(path: &Path, action: &'static str, source: std::io::Error) -> LogError {
    LogError {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<String> {
        lines
            .iter()
            .map(|line| String::from_utf8_lossy(&line.text).into_owned())
            .collect()
    }

    fn append(path: &Path, content: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the log file opens for appending");
        file.write_all(content.as_bytes())
            .expect("the log file takes the content");
    }

    #[test]
    fn full_entries_are_lines_with_stream_and_time() {
        let lines = parse_log(
            b"2024-05-01T10:00:00.123456789Z stdout F hello world\n\
              2024-05-01T10:00:01Z stderr F oops\n",
        );
        assert_eq!(texts(&lines), ["hello world", "oops"]);
        assert_eq!(lines[0].stream, Stream::Stdout);
        assert_eq!(lines[1].stream, Stream::Stderr);
        assert_eq!(lines[0].time, "2024-05-01T10:00:00.123456789Z");
        assert!(lines.iter().all(|line| line.complete));
        assert!(lines[0].timestamp < lines[1].timestamp);
    }

    #[test]
    fn partial_entries_join_per_stream_with_the_first_time() {
        let lines = parse_log(
            b"2024-05-01T10:00:00Z stdout P aaa\n\
              2024-05-01T10:00:01Z stderr F err\n\
              2024-05-01T10:00:02Z stdout P bbb\n\
              2024-05-01T10:00:03Z stdout F ccc\n",
        );
        assert_eq!(texts(&lines), ["err", "aaabbbccc"]);
        assert_eq!(lines[1].time, "2024-05-01T10:00:00Z");
        assert_eq!(lines[1].stream, Stream::Stdout);
    }

    #[test]
    fn text_keeps_spaces_and_empty_lines_survive() {
        let lines = parse_log(
            b"2024-05-01T10:00:00Z stdout F  two  spaces \n\
              2024-05-01T10:00:01Z stdout F \n\
              2024-05-01T10:00:02Z stdout F\n",
        );
        assert_eq!(texts(&lines), [" two  spaces ", "", ""]);
    }

    #[test]
    fn malformed_entries_are_skipped() {
        let lines = parse_log(
            b"not a log line\n\
              2024-05-01T10:00:00Z stdin F wrong stream\n\
              yesterday stdout F no time\n\
              2024-05-01T10:00:00Z stdout\n\
              2024-05-01T10:00:01Z stdout F kept\n",
        );
        assert_eq!(texts(&lines), ["kept"]);
    }

    #[test]
    fn extra_tags_after_the_first_are_ignored() {
        let lines =
            parse_log(b"2024-05-01T10:00:00Z stdout P:x a\n2024-05-01T10:00:01Z stdout F:y b\n");
        assert_eq!(texts(&lines), ["ab"]);
    }

    #[test]
    fn an_unterminated_last_entry_is_not_read_yet() {
        let lines =
            parse_log(b"2024-05-01T10:00:00Z stdout F one\n2024-05-01T10:00:01Z stdout F tw");
        assert_eq!(texts(&lines), ["one"]);
    }

    #[test]
    fn unfinished_partial_lines_come_last_marked_incomplete() {
        let lines =
            parse_log(b"2024-05-01T10:00:00Z stdout P begun\n2024-05-01T10:00:01Z stderr F done\n");
        assert_eq!(texts(&lines), ["done", "begun"]);
        assert!(lines[0].complete);
        assert!(!lines[1].complete);
        let mut out = Vec::new();
        lines[1].write_to(&mut out, false);
        assert_eq!(out, b"begun");
    }

    #[test]
    fn tail_lines_counts_joined_lines() {
        let lines = parse_log(
            b"2024-05-01T10:00:00Z stdout F 1\n\
              2024-05-01T10:00:01Z stdout P 2\n\
              2024-05-01T10:00:02Z stdout F 2\n\
              2024-05-01T10:00:03Z stdout F 3\n",
        );
        assert_eq!(texts(tail_lines(&lines, 2)), ["22", "3"]);
        assert_eq!(texts(tail_lines(&lines, 10)), ["1", "22", "3"]);
        assert!(tail_lines(&lines, 0).is_empty());
    }

    #[test]
    fn timestamps_are_written_with_nine_digits_and_the_runtime_offset() {
        assert_eq!(
            fixed_nanoseconds("2024-05-01T10:00:00.5Z"),
            "2024-05-01T10:00:00.500000000Z"
        );
        assert_eq!(
            fixed_nanoseconds("2024-05-01T10:00:00Z"),
            "2024-05-01T10:00:00.000000000Z"
        );
        assert_eq!(
            fixed_nanoseconds("2024-05-01T12:00:00.123456789+02:00"),
            "2024-05-01T12:00:00.123456789+02:00"
        );
    }

    #[test]
    fn render_applies_tail_then_since_timestamps_and_limit() {
        let lines = parse_log(
            b"2024-05-01T10:00:00Z stdout F old\n\
              2024-05-01T10:00:05.25Z stdout F new\n\
              2024-05-01T12:00:06+02:00 stderr F newer\n",
        );
        let options = LogOptions {
            tail_lines: Some(2),
            since: Some("2024-05-01T10:00:06Z".parse().expect("a valid time")),
            timestamps: true,
            limit_bytes: None,
        };
        assert_eq!(
            String::from_utf8_lossy(&render(&lines, &options)),
            "2024-05-01T12:00:06.000000000+02:00 newer\n"
        );
        let plain = LogOptions::default();
        assert_eq!(render(&lines, &plain), b"old\nnew\nnewer\n");
        let limited = LogOptions {
            limit_bytes: Some(6),
            ..LogOptions::default()
        };
        assert_eq!(render(&lines, &limited), b"old\nne");
    }

    #[test]
    fn follower_returns_only_new_complete_lines() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("c_0.log");
        let mut follower = LogFollower::new(&path);
        assert!(follower.read_new().expect("no file yet is fine").is_empty());

        append(
            &path,
            "2024-05-01T10:00:00Z stdout F one\n2024-05-01T10:00:01Z stdout P tw",
        );
        assert_eq!(texts(&follower.read_new().expect("reads")), ["one"]);
        let after_one = follower.offset();
        assert_eq!(
            after_one, 34,
            "the offset stops before the unterminated entry"
        );

        append(&path, "o-\n");
        assert!(
            follower.read_new().expect("reads").is_empty(),
            "`two-` is partial"
        );
        append(&path, "2024-05-01T10:00:03Z stdout F parts\n");
        assert_eq!(texts(&follower.read_new().expect("reads")), ["two-parts"]);
        assert!(follower.read_new().expect("reads").is_empty());

        let mut resumed = LogFollower::starting_at(&path, after_one);
        assert_eq!(texts(&resumed.read_new().expect("reads")), ["two-parts"]);
    }

    #[test]
    fn follower_reads_the_rest_of_a_rotated_file_then_the_new_one() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("c_0.log");
        append(&path, "2024-05-01T10:00:00Z stdout F one\n");
        let mut follower = LogFollower::new(&path);
        assert_eq!(texts(&follower.read_new().expect("reads")), ["one"]);

        // The runtime still writes to the renamed file until it reopens the path.
        append(&path, "2024-05-01T10:00:01Z stdout F two\n");
        std::fs::rename(&path, dir.path().join("c_0.log.20240501-100002"))
            .expect("the log renames");
        append(
            &dir.path().join("c_0.log.20240501-100002"),
            "2024-05-01T10:00:02Z stdout F three\n",
        );
        append(&path, "2024-05-01T10:00:03Z stdout F four\n");
        assert_eq!(
            texts(&follower.read_new().expect("reads")),
            ["two", "three", "four"]
        );
    }

    #[test]
    fn follower_starts_over_after_truncation() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("c_0.log");
        append(&path, "2024-05-01T10:00:00Z stdout F a long first line\n");
        let mut follower = LogFollower::new(&path);
        assert_eq!(follower.read_new().expect("reads").len(), 1);
        std::fs::write(&path, "2024-05-01T10:00:01Z stdout F b\n").expect("the log truncates");
        assert_eq!(texts(&follower.read_new().expect("reads")), ["b"]);
    }

    #[test]
    fn follower_counts_malformed_entries_and_flushes_incomplete_lines() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("c_0.log");
        append(&path, "garbage\n2024-05-01T10:00:00Z stdout P half\n");
        let mut follower = LogFollower::new(&path);
        assert!(follower.read_new().expect("reads").is_empty());
        assert_eq!(follower.malformed_entries(), 1);
        let incomplete = follower.take_incomplete();
        assert_eq!(texts(&incomplete), ["half"]);
        assert!(!incomplete[0].complete);
    }
}
