//! Label and field selectors: the `labelSelector` / `fieldSelector` query parameters and the
//! `metav1.LabelSelector` objects embedded in workloads, parsed and matched as kube-apiserver does.
//!
//! Owns the selector grammars (apimachinery's `labels.Parse` and `fields.ParseSelector`), the
//! label key/value validation those grammars apply, the per-kind field labels upstream supports
//! (the field label conversion funcs) and how each field label reads off a JSON object.
//! Pure: never touches HTTP or the store, and never decides what a handler does with a
//! selector beyond matching; error texts are upstream's because they end up verbatim in a
//! 400 BadRequest Status.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// Why a selector was rejected. The messages are upstream's, so clients see the texts they
/// would get from kube-apiserver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// One requirement of a `labelSelector` string is malformed or names an invalid key/value.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A `labelSelector` string is malformed between requirements.
    #[error("{0}")]
    LabelSyntax(String),
    /// A `metav1.LabelSelector` requirement with an invalid key, value or value count
    /// (upstream's `labels.NewRequirement` error list).
    #[error("{0}")]
    InvalidRequirement(String),
    /// A `matchExpressions` operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{} is not a valid label selector operator", go_quote(.operator))]
    InvalidOperator { operator: String },
    /// A `metav1.LabelSelector` that is not shaped as one (wrong JSON types).
    #[error("invalid label selector: {detail}")]
    MalformedLabelSelector { detail: String },
    /// A `fieldSelector` term without an operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax { selector: String, term: String },
    /// A backslash in a field selector value not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscapeSequence { sequence: String },
    /// A bare `,` or `=` inside a field selector value (upstream prints the code point).
    #[error("invalid field selector: unescaped character in value: {code_point}")]
    UnescapedCharacter { code_point: u32 },
    /// A field label the kind's conversion func rejects.
    #[error("field label not supported: {label}")]
    UnsupportedFieldLabel { label: String },
    /// A field label other than `metadata.name`/`metadata.namespace` for a kind with only the
    /// default conversion.
    #[error(
        "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
        go_quote(.label)
    )]
    UnknownFieldLabel { label: String },
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// A requirement operator (apimachinery's `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Exists,
    DoesNotExist,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

/// One `key op values` term; values are sorted and unique.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).and_then(Value::as_str);
        let in_values = |v: &str| self.values.iter().any(|candidate| candidate == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(in_values)
            }
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(in_values),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(actual) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [wanted] = self.values.as_slice() else {
                    return false;
                };
                let Ok(wanted) = wanted.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > wanted
                } else {
                    actual < wanted
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (operator, parenthesised) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
        };
        f.write_str(operator)?;
        if parenthesised {
            write!(f, "({})", self.values.join(","))
        } else {
            f.write_str(&self.values.join(","))
        }
    }
}

/// A parsed label selector: requirements ANDed together, sorted by key as upstream sorts them.
/// `Display` renders upstream's canonical string (`a=b,c in (x,y),!d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Upstream's `labels.Nothing()`: what a null `metav1.LabelSelector` selects.
    nothing: bool,
}

impl LabelSelector {
    /// The `labelSelector` query syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
    /// `a`, `!a` (and upstream's `a>1`, `a<1`), comma = AND; keys must be qualified names and
    /// values label values, as upstream validates them; the empty string selects everything.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut parser = Parser {
            tokens: lex(text),
            position: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// From a `metav1.LabelSelector` JSON object (`matchLabels` plus `matchExpressions` with
    /// In/NotIn/Exists/DoesNotExist); `{}` selects everything and `null` nothing, as upstream's
    /// `LabelSelectorAsSelector`.
    pub fn from_json(selector: &Value) -> Result<LabelSelector, SelectorError> {
        let object = match selector {
            Value::Null => {
                return Ok(LabelSelector {
                    requirements: Vec::new(),
                    nothing: true,
                });
            }
            Value::Object(object) => object,
            other => {
                return Err(malformed(format!(
                    "expected an object, found {}",
                    json_type(other)
                )));
            }
        };
        let match_labels = match object.get("matchLabels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(labels)) => Some(labels),
            Some(other) => {
                return Err(malformed(format!(
                    "matchLabels: expected an object, found {}",
                    json_type(other)
                )));
            }
        };
        let match_expressions = match object.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(expressions)) => expressions.as_slice(),
            Some(other) => {
                return Err(malformed(format!(
                    "matchExpressions: expected an array, found {}",
                    json_type(other)
                )));
            }
        };

        let mut requirements = Vec::new();
        let mut sorted_labels: Vec<(&String, &Value)> = match_labels
            .map(|labels| labels.iter().collect())
            .unwrap_or_default();
        sorted_labels.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in sorted_labels {
            let Some(value) = value.as_str() else {
                return Err(malformed(format!(
                    "matchLabels[{key}]: expected a string, found {}",
                    json_type(value)
                )));
            };
            let requirement =
                new_requirement(key, Operator::Equals, Values::Given(vec![value.to_owned()]))
                    .map_err(SelectorError::InvalidRequirement)?;
            requirements.push(requirement);
        }
        for (index, expression) in match_expressions.iter().enumerate() {
            let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
            let operator = expression
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("");
            let operator = match operator {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::InvalidOperator {
                        operator: other.to_owned(),
                    });
                }
            };
            let values = match expression.get("values") {
                None | Some(Value::Null) => Values::Absent,
                Some(Value::Array(items)) => {
                    let mut values = Vec::with_capacity(items.len());
                    for item in items {
                        let Some(item) = item.as_str() else {
                            return Err(malformed(format!(
                                "matchExpressions[{index}].values: expected strings, found {}",
                                json_type(item)
                            )));
                        };
                        values.push(item.to_owned());
                    }
                    Values::Given(values)
                }
                Some(other) => {
                    return Err(malformed(format!(
                        "matchExpressions[{index}].values: expected an array, found {}",
                        json_type(other)
                    )));
                }
            };
            let requirement = new_requirement(key, operator, values)
                .map_err(SelectorError::InvalidRequirement)?;
            requirements.push(requirement);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether a label set (an object's `metadata.labels`; absent = empty) satisfies every
    /// requirement. Non-string label values count as absent.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.nothing
            && self
                .requirements
                .iter()
                .all(|requirement| requirement.matches(labels))
    }

    /// Whether `object`'s `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, object: &Value) -> bool {
        let none = Map::new();
        let labels = object
            .get("metadata")
            .and_then(|metadata| metadata.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or(&none);
        self.matches(labels)
    }

    /// True when the selector selects everything (no requirements). A null
    /// `metav1.LabelSelector` selects nothing and is not empty.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, requirement) in self.requirements.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

fn malformed(detail: String) -> SelectorError {
    SelectorError::MalformedLabelSelector { detail }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// --- lexer (apimachinery labels.Lexer) --------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    End,
    Identifier,
    DoesNotExist,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    OpenParen,
    CloseParen,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    literal: String,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn lex(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(is_whitespace);
        let Some(first) = rest.chars().next() else {
            tokens.push(Token {
                kind: TokenKind::End,
                literal: String::new(),
            });
            return tokens;
        };
        if is_special(first) {
            // Longest match among the symbol tokens; every single special character is one.
            let (kind, length) = if rest.starts_with("!=") {
                (TokenKind::NotEquals, 2)
            } else if rest.starts_with("==") {
                (TokenKind::DoubleEquals, 2)
            } else {
                let kind = match first {
                    '!' => TokenKind::DoesNotExist,
                    '=' => TokenKind::Equals,
                    '>' => TokenKind::GreaterThan,
                    '<' => TokenKind::LessThan,
                    '(' => TokenKind::OpenParen,
                    ')' => TokenKind::CloseParen,
                    _ => TokenKind::Comma,
                };
                (kind, 1)
            };
            tokens.push(Token {
                kind,
                literal: rest[..length].to_owned(),
            });
            rest = &rest[length..];
        } else {
            let end = rest
                .find(|c: char| is_special(c) || is_whitespace(c))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            let kind = match word {
                "in" => TokenKind::In,
                "notin" => TokenKind::NotIn,
                _ => TokenKind::Identifier,
            };
            tokens.push(Token {
                kind,
                literal: word.to_owned(),
            });
            rest = &rest[end..];
        }
    }
}

// --- parser (apimachinery labels.Parser) ------------------------------------------------------

/// Where a token is read: as a value (keywords are identifiers there) or as an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn peek(&self, context: Context) -> (TokenKind, String) {
        let token = self
            .tokens
            .get(self.position)
            .or_else(|| self.tokens.last());
        let (mut kind, literal) = match token {
            Some(token) => (token.kind, token.literal.clone()),
            None => (TokenKind::End, String::new()),
        };
        if context == Context::Values && matches!(kind, TokenKind::In | TokenKind::NotIn) {
            kind = TokenKind::Identifier;
        }
        (kind, literal)
    }

    fn consume(&mut self, context: Context) -> (TokenKind, String) {
        let token = self.peek(context);
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (kind, literal) = self.peek(Context::Values);
            match kind {
                TokenKind::Identifier | TokenKind::DoesNotExist => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(SelectorError::Requirement)?;
                    requirements.push(requirement);
                    let (kind, literal) = self.consume(Context::Values);
                    match kind {
                        TokenKind::End => return Ok(requirements),
                        TokenKind::Comma => {
                            let (next, next_literal) = self.peek(Context::Values);
                            if next != TokenKind::Identifier && next != TokenKind::DoesNotExist {
                                return Err(SelectorError::LabelSyntax(format!(
                                    "found '{next_literal}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::LabelSyntax(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                TokenKind::End => return Ok(requirements),
                _ => {
                    return Err(SelectorError::LabelSyntax(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, operator) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = operator {
            return new_requirement(&key, operator, Values::Given(Vec::new()));
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(&key, operator, Values::Given(values.into_iter().collect()))
    }

    /// The key, and `Exists`/`DoesNotExist` when no binary operator follows it.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut kind, mut literal) = self.consume(Context::Values);
        if kind == TokenKind::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (kind, literal) = self.consume(Context::Values);
        }
        if kind != TokenKind::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        // Upstream validates the key here with the parser's nil field path.
        if let Some(error) = validate_label_key(&literal, "<nil>") {
            return Err(error);
        }
        let (next, _) = self.peek(Context::Values);
        if matches!(next, TokenKind::End | TokenKind::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (kind, literal) = self.consume(Context::KeyAndOperator);
        match kind {
            TokenKind::In => Ok(Operator::In),
            TokenKind::Equals => Ok(Operator::Equals),
            TokenKind::DoubleEquals => Ok(Operator::DoubleEquals),
            TokenKind::GreaterThan => Ok(Operator::GreaterThan),
            TokenKind::LessThan => Ok(Operator::LessThan),
            TokenKind::NotIn => Ok(Operator::NotIn),
            TokenKind::NotEquals => Ok(Operator::NotEquals),
            _ => Err(format!("found '{literal}', expected: {BINARY_OPERATORS}")),
        }
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (kind, literal) = self.consume(Context::Values);
        if kind != TokenKind::OpenParen {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (kind, literal) = self.peek(Context::Values);
        match kind {
            TokenKind::Identifier | TokenKind::Comma => {
                let values = self.parse_identifiers_list()?;
                let (kind, _) = self.consume(Context::Values);
                if kind != TokenKind::CloseParen {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            TokenKind::CloseParen => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (kind, literal) = self.consume(Context::Values);
            match kind {
                TokenKind::Identifier => {
                    values.insert(literal);
                    let (next, next_literal) = self.peek(Context::Values);
                    match next {
                        TokenKind::Comma => continue,
                        TokenKind::CloseParen => return Ok(values),
                        _ => return Err(format!("found '{next_literal}', expected: ',' or ')'")),
                    }
                }
                TokenKind::Comma => {
                    // `(,`, `,,` and `,)` stand for the empty value.
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.peek(Context::Values);
                    if next == TokenKind::CloseParen {
                        values.insert(String::new());
                        return Ok(values);
                    }
                    if next == TokenKind::Comma {
                        self.consume(Context::Values);
                        values.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (next, _) = self.peek(Context::Values);
        if matches!(next, TokenKind::End | TokenKind::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (kind, literal) = self.consume(Context::Values);
        if kind == TokenKind::Identifier {
            Ok(BTreeSet::from([literal]))
        } else {
            Err(format!("found '{literal}', expected: identifier"))
        }
    }
}

// --- requirement validation (apimachinery labels.NewRequirement) ------------------------------

/// A requirement's values as given: `Absent` is a nil list (printed `[]string(nil)`).
enum Values {
    Absent,
    Given(Vec<String>),
}

/// Upstream's `NewRequirement`: validates the key, the value count for the operator and every
/// value, and returns the aggregated field errors as upstream renders them.
fn new_requirement(key: &str, operator: Operator, values: Values) -> Result<Requirement, String> {
    let (values, printed) = match values {
        Values::Absent => (Vec::new(), "[]string(nil)".to_owned()),
        Values::Given(values) => {
            let printed = format!(
                "[]string{{{}}}",
                values
                    .iter()
                    .map(|value| go_quote(value))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            (values, printed)
        }
    };
    let mut errors = Vec::new();
    if let Some(error) = validate_label_key(key, "key") {
        errors.push(error);
    }
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => errors.push(format!(
            "values: Invalid value: {printed}: for 'in', 'notin' operators, values set can't be empty"
        )),
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
            errors.push(format!(
                "values: Invalid value: {printed}: exact-match compatibility requires one single value"
            ))
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errors.push(format!(
            "values: Invalid value: {printed}: values set must be empty for exists and does not exist"
        )),
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errors.push(format!(
                    "values: Invalid value: {printed}: for 'Gt', 'Lt' operators, exactly one value is required"
                ));
            }
            for (index, value) in values.iter().enumerate() {
                if value.parse::<i64>().is_err() {
                    errors.push(format!(
                        "values[{index}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                        go_quote(value)
                    ));
                }
            }
        }
        _ => {}
    }
    for (index, value) in values.iter().enumerate() {
        let problems = label_value_errors(value);
        if !problems.is_empty() {
            errors.push(format!(
                "values[{index}][{key}]: Invalid value: {}: {}",
                go_quote(value),
                problems.join("; ")
            ));
        }
    }
    if errors.is_empty() {
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        })
    } else {
        Err(aggregate(errors))
    }
}

/// Upstream's `utilerrors.Aggregate` rendering: one message alone, several deduplicated in
/// brackets.
fn aggregate(errors: Vec<String>) -> String {
    let mut unique: Vec<String> = Vec::new();
    for error in errors {
        if !unique.contains(&error) {
            unique.push(error);
        }
    }
    if unique.len() == 1 {
        unique.remove(0)
    } else {
        format!("[{}]", unique.join(", "))
    }
}

fn validate_label_key(key: &str, path: &str) -> Option<String> {
    let problems = qualified_name_errors(key);
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{path}: Invalid value: {}: {}",
            go_quote(key),
            problems.join("; ")
        ))
    }
}

const QUALIFIED_NAME_FORMAT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
const LABEL_VALUE_FORMAT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_MAX_LENGTH: usize = 63;
const DNS1123_SUBDOMAIN_FORMAT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

/// Upstream's `validation.RegexError` text.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut text = format!("{message} (e.g. ");
    for (index, example) in examples.iter().enumerate() {
        if index > 0 {
            text.push_str(" or ");
        }
        text.push_str(&format!("'{example}', "));
    }
    text.push_str(&format!("regex used for validation is '{format}')"));
    text
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
fn is_qualified_name_part(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, anchored.
fn is_dns1123_subdomain(text: &str) -> bool {
    text.split('.').all(|label| {
        let bytes = label.as_bytes();
        let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alphanumeric(first)
                    && alphanumeric(last)
                    && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

/// Upstream's `validation.IsQualifiedName`.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
                    errors.push(format!(
                        "prefix part must be no more than {DNS1123_SUBDOMAIN_MAX_LENGTH} characters"
                    ));
                }
                if !is_dns1123_subdomain(prefix) {
                    errors.push(format!(
                        "prefix part {}",
                        regex_error(
                            DNS1123_SUBDOMAIN_MESSAGE,
                            DNS1123_SUBDOMAIN_FORMAT,
                            &["example.com"]
                        )
                    ));
                }
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MESSAGE,
                    QUALIFIED_NAME_FORMAT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errors.push(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX_LENGTH} characters"
        ));
    }
    if !is_qualified_name_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MESSAGE,
                QUALIFIED_NAME_FORMAT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// Upstream's `validation.IsValidLabelValue`.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errors.push(format!(
            "must be no more than {LABEL_VALUE_MAX_LENGTH} characters"
        ));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(regex_error(
            LABEL_VALUE_MESSAGE,
            LABEL_VALUE_FORMAT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// Go's `%q` for the strings selectors carry.
fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => {
                let code = u32::from(c);
                if code < 0x80 {
                    quoted.push_str(&format!("\\x{code:02x}"));
                } else {
                    quoted.push_str(&format!("\\u{code:04x}"));
                }
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// One `field=value` (or `!=`) term, its label already converted for the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    equals: bool,
}

/// A parsed `fieldSelector` for one kind: terms ANDed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector {
    kind: String,
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// The `fieldSelector` syntax `a=b`, `a==b`, `a!=b`, comma = AND, with upstream's value
    /// escaping (`\,` `\=` `\\`); only the field labels upstream supports for `kind` are
    /// accepted (see [`convert_field_label`]), anything else is an error naming the label.
    pub fn parse(kind: &str, text: &str) -> Result<FieldSelector, SelectorError> {
        let mut parts = split_terms(text);
        parts.sort_unstable();
        let mut parsed = Vec::new();
        for part in parts.into_iter().filter(|part| !part.is_empty()) {
            let Some((field, operator, value)) = split_term(part) else {
                return Err(SelectorError::FieldSyntax {
                    selector: text.to_owned(),
                    term: part.to_owned(),
                });
            };
            parsed.push(FieldTerm {
                field: field.to_owned(),
                value: unescape_value(value)?,
                equals: operator != "!=",
            });
        }
        // Upstream parses every term before converting any label.
        let mut terms = Vec::with_capacity(parsed.len());
        for term in parsed {
            terms.push(FieldTerm {
                field: convert_field_label(kind, &term.field)?,
                ..term
            });
        }
        Ok(FieldSelector {
            kind: kind.to_owned(),
            terms,
        })
    }

    /// Whether `object` satisfies every term. A field the object lacks reads as `""`, booleans
    /// as `"true"`/`"false"` and counts as decimal numbers, as upstream's selectable field sets.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = field_value(&self.kind, object, &term.field);
            (actual == term.value) == term.equals
        })
    }

    /// True when the selector has no terms (selects everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The name the selector pins with `metadata.name=x` (or `==`), if any; handlers use it to
    /// read one key instead of listing.
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|term| term.equals && term.field == "metadata.name")
            .map(|term| term.value.as_str())
    }
}

/// Upstream's `splitTerms`: split on commas not preceded by an escaping backslash.
fn split_terms(text: &str) -> Vec<&str> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (index, c) in text.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&text[start..index]);
            start = index + 1;
        }
    }
    terms.push(&text[start..]);
    terms
}

/// Upstream's `splitTerm`: the first position where `!=`, `==` or `=` starts.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (index, _) in term.char_indices() {
        let remaining = &term[index..];
        for operator in ["!=", "==", "="] {
            if let Some(value) = remaining.strip_prefix(operator) {
                return Some((&term[..index], operator, value));
            }
        }
    }
    None
}

/// Upstream's `UnescapeValue`.
fn unescape_value(text: &str) -> Result<String, SelectorError> {
    let mut value = String::with_capacity(text.len());
    let mut in_slash = false;
    for c in text.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => value.push(c),
                other => {
                    return Err(SelectorError::InvalidEscapeSequence {
                        sequence: format!("\\{other}"),
                    });
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError::UnescapedCharacter {
                    code_point: u32::from(c),
                });
            }
            other => value.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscapeSequence {
            sequence: "\\".to_owned(),
        });
    }
    Ok(value)
}

/// The field labels upstream accepts for `kind` (its field label conversion func), returning
/// the label to match on (`spec.host` is upstream's old name for a pod's `spec.nodeName`).
fn convert_field_label(kind: &str, label: &str) -> Result<String, SelectorError> {
    let supported: &[&str] = match kind {
        "Pod" => {
            if label == "spec.host" {
                return Ok("spec.nodeName".to_owned());
            }
            &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ]
        }
        "Node" => &["metadata.name", "spec.unschedulable"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        "Namespace" => &["status.phase", "metadata.name"],
        "Secret" => &["type", "metadata.namespace", "metadata.name"],
        "Service" => &[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ],
        "ReplicaSet" => &["metadata.name", "metadata.namespace", "status.replicas"],
        _ => {
            return match label {
                "metadata.name" | "metadata.namespace" => Ok(label.to_owned()),
                _ => Err(SelectorError::UnknownFieldLabel {
                    label: label.to_owned(),
                }),
            };
        }
    };
    if supported.contains(&label) {
        Ok(label.to_owned())
    } else {
        Err(SelectorError::UnsupportedFieldLabel {
            label: label.to_owned(),
        })
    }
}

/// The value of a (converted) field label on `object`, as upstream's `ToSelectableFields`.
fn field_value(kind: &str, object: &Value, field: &str) -> String {
    let text = |path: &[&str]| string_at(object, path).to_owned();
    match (kind, field) {
        (_, "metadata.name") => text(&["metadata", "name"]),
        (_, "metadata.namespace") => text(&["metadata", "namespace"]),
        ("Pod", "spec.hostNetwork") => bool_at(object, &["spec", "hostNetwork"]).to_string(),
        ("Pod", "status.podIP") => {
            let first = value_at(object, &["status", "podIPs"])
                .and_then(Value::as_array)
                .and_then(|ips| ips.first())
                .and_then(|ip| ip.get("ip"))
                .and_then(Value::as_str);
            first
                .map(str::to_owned)
                .unwrap_or_else(|| text(&["status", "podIP"]))
        }
        // Upstream accepts the label but its selectable field set has no entry for it, so it
        // always reads as empty.
        ("Pod", "status.podIPs") => String::new(),
        ("Node", "spec.unschedulable") => bool_at(object, &["spec", "unschedulable"]).to_string(),
        ("Event", "reportingComponent") => text(&["reportingComponent"]),
        ("Event", "source") => {
            let component = string_at(object, &["source", "component"]);
            if component.is_empty() {
                text(&["reportingComponent"])
            } else {
                component.to_owned()
            }
        }
        ("ReplicaSet", "status.replicas") => value_at(object, &["status", "replicas"])
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        (_, field) => {
            let path: Vec<&str> = field.split('.').collect();
            text(&path)
        }
    }
}

fn value_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |value, segment| value.get(segment))
}

fn string_at<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    value_at(object, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn bool_at(object: &Value, path: &[&str]) -> bool {
    value_at(object, path)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn parse_error(text: &str) -> String {
        LabelSelector::parse(text)
            .expect_err("selector should be rejected")
            .to_string()
    }

    #[test]
    fn empty_label_selector_selects_everything() {
        let selector = LabelSelector::parse("").unwrap();
        assert!(selector.is_empty());
        assert!(selector.matches(&labels(json!({}))));
        assert!(selector.matches(&labels(json!({"a": "b"}))));
        assert!(LabelSelector::parse("   ").unwrap().is_empty());
    }

    #[test]
    fn equality_requirements_are_anded() {
        let selector = LabelSelector::parse("app=web, tier==front,env!=prod").unwrap();
        assert!(selector.matches(&labels(json!({"app": "web", "tier": "front"}))));
        assert!(selector.matches(&labels(
            json!({"app": "web", "tier": "front", "env": "dev"})
        )));
        assert!(!selector.matches(&labels(
            json!({"app": "web", "tier": "front", "env": "prod"})
        )));
        assert!(!selector.matches(&labels(json!({"app": "web"}))));
        assert_eq!(selector.to_string(), "app=web,env!=prod,tier==front");
    }

    #[test]
    fn set_based_requirements() {
        let selector = LabelSelector::parse("env in (prod, staging),tier notin (db)").unwrap();
        assert!(selector.matches(&labels(json!({"env": "prod"}))));
        assert!(selector.matches(&labels(json!({"env": "staging", "tier": "web"}))));
        assert!(!selector.matches(&labels(json!({"env": "dev"}))));
        assert!(!selector.matches(&labels(json!({"env": "prod", "tier": "db"}))));
        assert!(!selector.matches(&labels(json!({"tier": "web"}))));
        assert_eq!(
            selector.to_string(),
            "env in (prod,staging),tier notin (db)"
        );
    }

    #[test]
    fn notin_and_not_equals_match_objects_without_the_label() {
        let selector = LabelSelector::parse("tier notin (db),env!=prod").unwrap();
        assert!(selector.matches(&labels(json!({}))));
    }

    #[test]
    fn exists_and_does_not_exist() {
        let selector = LabelSelector::parse("app,!canary").unwrap();
        assert!(selector.matches(&labels(json!({"app": ""}))));
        assert!(!selector.matches(&labels(json!({"app": "x", "canary": "true"}))));
        assert!(!selector.matches(&labels(json!({"other": "x"}))));
        assert_eq!(selector.to_string(), "app,!canary");
    }

    #[test]
    fn keywords_are_values_inside_sets_and_empty_values_are_allowed() {
        let selector = LabelSelector::parse("in in (in,notin)").unwrap();
        assert!(selector.matches(&labels(json!({"in": "notin"}))));
        let selector = LabelSelector::parse("a=,b in ()").unwrap();
        assert!(selector.matches(&labels(json!({"a": "", "b": ""}))));
        assert!(!selector.matches(&labels(json!({"a": "x", "b": ""}))));
    }

    #[test]
    fn greater_and_less_than_compare_integers() {
        let selector = LabelSelector::parse("replicas>2,replicas<10").unwrap();
        assert!(selector.matches(&labels(json!({"replicas": "5"}))));
        assert!(!selector.matches(&labels(json!({"replicas": "2"}))));
        assert!(!selector.matches(&labels(json!({"replicas": "five"}))));
        assert_eq!(
            parse_error("a>b"),
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn qualified_keys_with_prefixes_are_accepted() {
        let selector = LabelSelector::parse("app.kubernetes.io/name=web").unwrap();
        assert!(selector.matches(&labels(json!({"app.kubernetes.io/name": "web"}))));
    }

    #[test]
    fn invalid_key_reports_upstream_text() {
        assert_eq!(
            parse_error("a:"),
            "unable to parse requirement: <nil>: Invalid value: \"a:\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert!(parse_error("Example.com/a=b").contains("prefix part a lowercase RFC 1123"));
    }

    #[test]
    fn invalid_value_reports_upstream_text() {
        assert_eq!(
            parse_error("app=-web"),
            "unable to parse requirement: values[0][app]: Invalid value: \"-web\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
    }

    #[test]
    fn syntax_errors_report_upstream_text() {
        assert_eq!(
            parse_error("env IN (a)"),
            "unable to parse requirement: found 'IN', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            parse_error("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            parse_error("a=b,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            parse_error("=b"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            parse_error("a in (x"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            parse_error("a in x"),
            "unable to parse requirement: found 'x' expected: '('"
        );
        assert_eq!(
            parse_error("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn metav1_label_selector_match_labels_and_expressions() {
        let selector = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "team", "operator": "Exists"}
            ]
        }))
        .unwrap();
        assert!(selector.matches(&labels(json!({"app": "web", "env": "prod", "team": "a"}))));
        assert!(!selector.matches(&labels(json!({"app": "web", "env": "prod"}))));
        assert!(!selector.matches(&labels(
            json!({"app": "web", "env": "prod", "team": "a", "canary": "1"})
        )));
        assert_eq!(
            selector.to_string(),
            "app=web,!canary,env in (prod,staging),team,tier notin (db)"
        );
    }

    #[test]
    fn empty_metav1_selector_selects_everything_and_null_selects_nothing() {
        let everything = LabelSelector::from_json(&json!({})).unwrap();
        assert!(everything.is_empty());
        assert!(everything.matches_object(&json!({"metadata": {"name": "x"}})));
        let nothing = LabelSelector::from_json(&Value::Null).unwrap();
        assert!(!nothing.is_empty());
        assert!(!nothing.matches_object(&json!({"metadata": {"labels": {"a": "b"}}})));
    }

    #[test]
    fn metav1_selector_errors() {
        let error = LabelSelector::from_json(&json!({
            "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"Gt\" is not a valid label selector operator"
        );
        let error = LabelSelector::from_json(&json!({
            "matchExpressions": [{"key": "a", "operator": "In"}]
        }))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        let error = LabelSelector::from_json(&json!({
            "matchExpressions": [{"key": "a b", "operator": "Exists", "values": ["x"]}]
        }))
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("[key: Invalid value: \"a b\": name part"),
            "{text}"
        );
        assert!(text.contains(", values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist]"), "{text}");
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let selector = LabelSelector::parse("app=web").unwrap();
        assert!(selector.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!selector.matches_object(&json!({"metadata": {"name": "no-labels"}})));
        assert!(
            LabelSelector::parse("!app")
                .unwrap()
                .matches_object(&json!({}))
        );
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "node-a", "restartPolicy": "Always", "schedulerName": "default-scheduler", "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
        })
    }

    #[test]
    fn pod_field_selectors_match_spec_and_status_fields() {
        let selector =
            FieldSelector::parse("Pod", "spec.nodeName=node-a,status.phase=Running").unwrap();
        assert!(selector.matches(&pod()));
        let selector = FieldSelector::parse("Pod", "spec.nodeName!=node-a").unwrap();
        assert!(!selector.matches(&pod()));
        let selector = FieldSelector::parse("Pod", "status.podIP==10.0.0.5").unwrap();
        assert!(selector.matches(&pod()));
        let selector = FieldSelector::parse("Pod", "spec.host=node-a").unwrap();
        assert!(selector.matches(&pod()));
    }

    #[test]
    fn absent_fields_read_as_empty_and_booleans_as_text() {
        let unscheduled = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(
            FieldSelector::parse("Pod", "spec.nodeName=")
                .unwrap()
                .matches(&unscheduled)
        );
        assert!(
            FieldSelector::parse("Pod", "spec.hostNetwork=false")
                .unwrap()
                .matches(&unscheduled)
        );
        let host_network = json!({"spec": {"hostNetwork": true}});
        assert!(
            FieldSelector::parse("Pod", "spec.hostNetwork=true")
                .unwrap()
                .matches(&host_network)
        );
        let cordoned = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert!(
            FieldSelector::parse("Node", "spec.unschedulable=true")
                .unwrap()
                .matches(&cordoned)
        );
        assert!(
            FieldSelector::parse("Node", "spec.unschedulable!=true")
                .unwrap()
                .matches(&json!({}))
        );
        let replica_set = json!({"metadata": {"name": "rs"}, "status": {}});
        assert!(
            FieldSelector::parse("ReplicaSet", "status.replicas=0")
                .unwrap()
                .matches(&replica_set)
        );
    }

    #[test]
    fn per_kind_field_labels() {
        let secret =
            json!({"metadata": {"name": "s", "namespace": "ns"}, "type": "kubernetes.io/tls"});
        assert!(
            FieldSelector::parse("Secret", "type=kubernetes.io/tls")
                .unwrap()
                .matches(&secret)
        );
        let namespace = json!({"metadata": {"name": "ns"}, "status": {"phase": "Terminating"}});
        assert!(
            FieldSelector::parse("Namespace", "status.phase=Terminating")
                .unwrap()
                .matches(&namespace)
        );
        let service = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10"}});
        assert!(
            FieldSelector::parse("Service", "spec.type=NodePort,spec.clusterIP=10.96.0.10")
                .unwrap()
                .matches(&service)
        );
        let config_map = json!({"metadata": {"name": "c", "namespace": "kube-system"}});
        assert!(
            FieldSelector::parse("ConfigMap", "metadata.namespace=kube-system")
                .unwrap()
                .matches(&config_map)
        );
    }

    #[test]
    fn event_source_falls_back_to_reporting_component() {
        let event = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
            "reason": "Scheduled", "type": "Normal",
            "reportingComponent": "default-scheduler"
        });
        let selector = FieldSelector::parse(
            "Event",
            "involvedObject.kind=Pod,involvedObject.name=web-1,source=default-scheduler,type=Normal",
        )
        .unwrap();
        assert!(selector.matches(&event));
        let with_source = json!({"source": {"component": "kubelet"}, "reportingComponent": "x"});
        assert!(
            FieldSelector::parse("Event", "source=kubelet")
                .unwrap()
                .matches(&with_source)
        );
    }

    #[test]
    fn unsupported_field_labels_are_named() {
        assert_eq!(
            FieldSelector::parse("Pod", "spec.foo=bar")
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.foo"
        );
        assert_eq!(
            FieldSelector::parse("Node", "metadata.namespace=x")
                .unwrap_err()
                .to_string(),
            "field label not supported: metadata.namespace"
        );
        assert_eq!(
            FieldSelector::parse("ConfigMap", "data.key=x")
                .unwrap_err()
                .to_string(),
            "\"data.key\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }

    #[test]
    fn field_selector_syntax_errors() {
        assert_eq!(
            FieldSelector::parse("Pod", "metadata.name")
                .unwrap_err()
                .to_string(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            FieldSelector::parse("Pod", "metadata.name=a=b")
                .unwrap_err()
                .to_string(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            FieldSelector::parse("Pod", "metadata.name=a\\x")
                .unwrap_err()
                .to_string(),
            "invalid field selector: invalid escape sequence: \\x"
        );
        assert_eq!(
            FieldSelector::parse("Pod", "metadata.name=a\\")
                .unwrap_err()
                .to_string(),
            "invalid field selector: invalid escape sequence: \\"
        );
    }

    #[test]
    fn escaped_values_are_unescaped() {
        let selector = FieldSelector::parse("ConfigMap", "metadata.name=a\\,b\\=c\\\\d").unwrap();
        assert!(selector.matches(&json!({"metadata": {"name": "a,b=c\\d"}})));
        assert_eq!(selector.name(), Some("a,b=c\\d"));
    }

    #[test]
    fn metadata_name_equality_pins_a_name() {
        let selector = FieldSelector::parse("Pod", "spec.nodeName=n,metadata.name==web-1").unwrap();
        assert_eq!(selector.name(), Some("web-1"));
        assert_eq!(
            FieldSelector::parse("Pod", "metadata.name!=web-1")
                .unwrap()
                .name(),
            None
        );
        assert_eq!(
            FieldSelector::parse("Pod", "spec.nodeName=n")
                .unwrap()
                .name(),
            None
        );
    }

    #[test]
    fn empty_field_selector_selects_everything() {
        let selector = FieldSelector::parse("Pod", "").unwrap();
        assert!(selector.is_empty());
        assert!(selector.matches(&pod()));
        assert!(FieldSelector::parse("Pod", ",").unwrap().is_empty());
    }
}
