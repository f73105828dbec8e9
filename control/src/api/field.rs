//! Field-precise validation errors, shaped like upstream's `field.Error` so that the `Invalid`
//! Status causes (`reason`, `field`, `message`) read exactly as kube-apiserver's.
//!
//! Owns the error type and its rendering; the rules live in `validation`.

use serde_json::Value;

/// Upstream's `field.ErrorType`: the `reason` of a Status cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `FieldValueNotFound`
    NotFound,
    /// `FieldValueRequired`: "Required value"
    Required,
    /// `FieldValueDuplicate`: "Duplicate value"
    Duplicate,
    /// `FieldValueInvalid`: "Invalid value"
    Invalid,
    /// `FieldValueNotSupported`: "Unsupported value"
    NotSupported,
    /// `FieldValueForbidden`: "Forbidden"
    Forbidden,
    /// `FieldValueTooLong`: "Too long"
    TooLong,
    /// `FieldValueTooMany`: "Too many"
    TooMany,
}

impl ErrorType {
    /// The Status cause `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
        }
    }

    /// The message prefix upstream prints.
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        }
    }
}

/// One validation failure at a field path such as `spec.containers[0].image`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub error_type: ErrorType,
    pub field: String,
    /// The offending value, when upstream prints it (Invalid, Duplicate, NotSupported).
    pub value: Option<Value>,
    /// The detail after the value (may be empty).
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: ErrorType::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            error_type: ErrorType::Invalid,
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> FieldError {
        FieldError {
            error_type: ErrorType::Duplicate,
            field: field.into(),
            value: Some(value.into()),
            detail: String::new(),
        }
    }

    /// `supported` lists the accepted values, as upstream's `NotSupported` does.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[&str],
    ) -> FieldError {
        let quoted: Vec<String> = supported
            .iter()
            .map(|value| format!("\"{value}\""))
            .collect();
        FieldError {
            error_type: ErrorType::NotSupported,
            field: field.into(),
            value: Some(value.into()),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: ErrorType::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    pub fn too_long(field: impl Into<String>, max_length: usize) -> FieldError {
        FieldError {
            error_type: ErrorType::TooLong,
            field: field.into(),
            value: None,
            detail: format!("may not be more than {max_length} bytes"),
        }
    }

    /// The cause message without the field: `Invalid value: "Foo": must be ...`.
    pub fn message(&self) -> String {
        let mut message = self.error_type.text().to_owned();
        if let Some(value) = &self.value {
            let rendered = match value {
                Value::String(text) => format!("\"{text}\""),
                other => other.to_string(),
            };
            message.push_str(": ");
            message.push_str(&rendered);
        }
        if !self.detail.is_empty() {
            message.push_str(": ");
            message.push_str(&self.detail);
        }
        message
    }

    /// `field: message`, as the Status message lists each error.
    pub fn full_message(&self) -> String {
        format!("{}: {}", self.field, self.message())
    }
}

/// Immutable-field error text upstream uses.
pub const FIELD_IMMUTABLE: &str = "field is immutable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_upstream() {
        let error = FieldError::invalid("metadata.name", "Foo", "must be lowercase");
        assert_eq!(
            error.full_message(),
            "metadata.name: Invalid value: \"Foo\": must be lowercase"
        );
        let error = FieldError::required("spec.containers[0].image", "");
        assert_eq!(
            error.full_message(),
            "spec.containers[0].image: Required value"
        );
        let error = FieldError::not_supported("spec.type", "Bogus", &["ClusterIP", "NodePort"]);
        assert_eq!(
            error.message(),
            "Unsupported value: \"Bogus\": supported values: \"ClusterIP\", \"NodePort\""
        );
        assert_eq!(error.error_type.reason(), "FieldValueNotSupported");
    }
}
