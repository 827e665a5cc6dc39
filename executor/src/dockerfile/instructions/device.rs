//! `RUN --device`: a CSV value naming a CDI device (`name=vendor.com/class=x`, or the
//! name as the first bare field) and whether the build fails without it (`required`).
//! Read at parse time with BuildKit's rules and messages.

use super::mount::{csv_fields, parse_go_bool, CsvError, DidYouMean};

/// Why a `--device` value is not valid (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceSpecError {
    #[error("failed to parse csv devices: {0}")]
    Csv(#[source] CsvError),
    #[error("invalid field '{0}' must be a key=value pair")]
    NotKeyValue(String),
    #[error("device name already set to {0}")]
    NameAlreadySet(String),
    #[error("invalid value for {key}: {value}")]
    InvalidValue { key: String, value: String },
    #[error("unexpected key '{key}' in '{field}'{suggestion}")]
    UnknownKey {
        key: String,
        field: String,
        suggestion: DidYouMean,
    },
}

/// One `RUN --device` value.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RunDevice {
    /// The device name (may be empty when only `required` was given).
    pub name: String,
    /// The build fails if the device is not available.
    pub required: bool,
}

const DEVICE_KEYS: &[&str] = &["name", "required"];

/// Parses one `--device` value.
pub fn parse_device(spec: &str) -> Result<RunDevice, DeviceSpecError> {
    let fields = csv_fields(spec).map_err(DeviceSpecError::Csv)?;
    let mut d = RunDevice::default();
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            if field.eq_ignore_ascii_case("required") {
                d.required = true;
            } else if d.name.is_empty() {
                d.name = field;
            } else {
                return Err(DeviceSpecError::NotKeyValue(field));
            }
            continue;
        };
        let key = key.to_lowercase();
        match key.as_str() {
            "name" => {
                if !d.name.is_empty() {
                    return Err(DeviceSpecError::NameAlreadySet(d.name));
                }
                d.name = value.to_string();
            }
            "required" => {
                d.required = parse_go_bool(value).ok_or_else(|| DeviceSpecError::InvalidValue {
                    key: key.clone(),
                    value: value.to_string(),
                })?;
            }
            _ if d.name.is_empty() => d.name = field.clone(),
            _ => {
                return Err(DeviceSpecError::UnknownKey {
                    suggestion: DidYouMean::of(&key, DEVICE_KEYS),
                    key,
                    field,
                })
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, required: bool) -> RunDevice {
        RunDevice {
            name: name.into(),
            required,
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse_device("vendor.com/gpu=all"),
            Ok(dev("vendor.com/gpu=all", false))
        );
        assert_eq!(
            parse_device("vendor.com/gpu"),
            Ok(dev("vendor.com/gpu", false))
        );
        assert_eq!(
            parse_device("name=vendor.com/gpu=0,required"),
            Ok(dev("vendor.com/gpu=0", true))
        );
        assert_eq!(
            parse_device("vendor.com/gpu,Required=false"),
            Ok(dev("vendor.com/gpu", false))
        );
        assert_eq!(parse_device("required=1,name=x"), Ok(dev("x", true)));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_device("a,b").unwrap_err().to_string(),
            "invalid field 'b' must be a key=value pair"
        );
        assert_eq!(
            parse_device("a,name=b").unwrap_err().to_string(),
            "device name already set to a"
        );
        assert_eq!(
            parse_device("a,required=maybe").unwrap_err().to_string(),
            "invalid value for required: maybe"
        );
        assert_eq!(
            parse_device("a,nme=b").unwrap_err().to_string(),
            "unexpected key 'nme' in 'nme=b' (did you mean name?)"
        );
        assert!(parse_device("\"a")
            .unwrap_err()
            .to_string()
            .starts_with("failed to parse csv devices: "));
    }
}
