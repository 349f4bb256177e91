//! Validation of metric and label names, done once at registration.

use super::error::Error;

/// True when `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// True when `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    !name.contains(':') && valid_metric_name(name)
}

/// Checks label names: valid, not repeated, not reserved (`le`, `quantile`).
pub(crate) fn check_label_names(metric: &str, labels: &[&str]) -> Result<(), Error> {
    for (i, label) in labels.iter().enumerate() {
        let why = if !valid_label_name(label) {
            "must match [a-zA-Z_][a-zA-Z0-9_]*"
        } else if label.starts_with("__") || *label == "le" || *label == "quantile" {
            "is reserved"
        } else if labels[..i].contains(label) {
            "appears twice"
        } else {
            continue;
        };
        let message = format!("metric {metric}: label name {label:?} {why}");
        return Err(Error::refused(message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for ok in ["a", "_a", ":a", "a:b_c9", "A_Z"] {
            assert!(valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a b", "é", "a.b", "a{"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn label_names() {
        for ok in ["a", "_a", "a9", "A_Z"] {
            assert!(valid_label_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a:b", "a-b", "é", "a\"b"] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn reserved_and_repeated_labels_are_refused() {
        for bad in [
            &["__x"][..],
            &["le"],
            &["quantile"],
            &["a", "a"],
            &["ok", "b-c"],
        ] {
            assert!(check_label_names("m", bad).is_err(), "{bad:?}");
        }
        assert!(check_label_names("m", &["a", "b", "_c"]).is_ok());
    }
}
