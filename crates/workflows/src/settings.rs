//! Validation of the workflow worker's settings: every bad value is refused at start with a
//! message naming its environment variable, and the byte-size parser of `SOURCE_MAX_BODY`.

use std::fmt;

/// A setting refused at start: names the variable, the value given and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value} is refused: it must be {expected}")]
pub struct InvalidSetting {
    /// The environment variable (also the flag, in lower kebab case).
    pub variable: &'static str,
    /// The value given, as the operator wrote it or as parsed.
    pub value: String,
    /// What an accepted value is.
    pub expected: String,
}

impl InvalidSetting {
    /// A refusal of `value` for `variable`.
    pub fn new(variable: &'static str, value: impl fmt::Display, expected: impl Into<String>) -> Self {
        Self {
            variable,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Default of `SOURCE_MAX_BODY`: 1 MiB, far above the documents the sources send (a few KiB)
/// and far below what one CDC event may carry (see [`MAX_SOURCE_MAX_BODY`]).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Smallest `SOURCE_MAX_BODY` accepted: a job status without data is about 100 bytes, so less
/// than this would refuse sources that work.
pub const MIN_SOURCE_MAX_BODY: usize = 1024;

/// Largest `SOURCE_MAX_BODY` accepted: 2 MiB. The stored document travels in the CDC event of
/// its row's UPDATE, which with `REPLICA IDENTITY FULL` carries the row before and after, as a
/// JSON string inside Debezium's JSON (each `"` escaped, up to twice the size), and a Pub/Sub
/// message holds at most 10 MB: 2 x 2 x 2 MiB = 8 MiB leaves room for the envelope.
pub const MAX_SOURCE_MAX_BODY: usize = 2 * 1024 * 1024;

/// Parses a byte size: a number of bytes with an optional unit `B`, `KiB`, `MiB` (or `K`/`KB`,
/// `M`/`MB`, both read as powers of 1024), e.g. `1MiB`, `512KiB`, `1048576`.
///
/// # Errors
/// A message saying what is expected, for clap to print next to the variable's name.
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let expected = || format!("{text:?} is not a byte size, expected e.g. \"1MiB\", \"512KiB\" or \"1048576\"");
    let number: usize = number.parse().map_err(|_| expected())?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(expected()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        // Arrange
        let cases = [
            ("1048576", 1_048_576),
            ("1MiB", 1_048_576),
            ("1 MiB", 1_048_576),
            ("2m", 2_097_152),
            ("512KiB", 524_288),
            ("64kb", 65_536),
            ("100B", 100),
        ];

        // Act
        let parsed: Vec<_> = cases.iter().map(|(text, _)| parse_byte_size(text)).collect();

        // Assert
        for ((text, expected), got) in cases.iter().zip(parsed) {
            assert_eq!(got, Ok(*expected), "{text}");
        }
    }

    #[test]
    fn text_that_is_not_a_byte_size_is_refused_with_an_example() {
        // Arrange
        let cases = ["", "MiB", "1.5MiB", "-1", "1GiB", "ten", "99999999999999999999"];

        // Act
        let errors: Vec<_> = cases.iter().map(|text| parse_byte_size(text)).collect();

        // Assert
        for (text, error) in cases.iter().zip(errors) {
            let error = error.expect_err(text);
            assert!(error.contains(text.trim()), "{text}: {error}");
        }
    }

    #[test]
    fn an_invalid_setting_names_its_variable_and_value() {
        let error = InvalidSetting::new("POLL_INTERVAL", "0s", "more than zero");
        assert_eq!(
            error.to_string(),
            "POLL_INTERVAL=0s is refused: it must be more than zero"
        );
    }
}
