//! `RUN --device`: a CSV value naming a CDI device (`name=vendor.com/class=x`, or the
//! name as the first bare field) and whether the build fails without it (`required`).
//! Read at parse time with BuildKit's rules and messages.

use super::mount::{csv_fields, hint, parse_go_bool};

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
pub fn parse_device(spec: &str) -> Result<RunDevice, String> {
    let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv devices: {e}"))?;
    let mut d = RunDevice::default();
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            if field.eq_ignore_ascii_case("required") {
                d.required = true;
            } else if d.name.is_empty() {
                d.name = field;
            } else {
                return Err(format!("invalid field '{field}' must be a key=value pair"));
            }
            continue;
        };
        let key = key.to_lowercase();
        match key.as_str() {
            "name" => {
                if !d.name.is_empty() {
                    return Err(format!("device name already set to {}", d.name));
                }
                d.name = value.to_string();
            }
            "required" => {
                d.required = parse_go_bool(value)
                    .ok_or_else(|| format!("invalid value for {key}: {value}"))?;
            }
            _ if d.name.is_empty() => d.name = field.clone(),
            _ => {
                return Err(hint(
                    format!("unexpected key '{key}' in '{field}'"),
                    &key,
                    DEVICE_KEYS,
                ))
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
            parse_device("a,b"),
            Err("invalid field 'b' must be a key=value pair".into())
        );
        assert_eq!(
            parse_device("a,name=b"),
            Err("device name already set to a".into())
        );
        assert_eq!(
            parse_device("a,required=maybe"),
            Err("invalid value for required: maybe".into())
        );
        assert_eq!(
            parse_device("a,nme=b"),
            Err("unexpected key 'nme' in 'nme=b' (did you mean name?)".into())
        );
        assert!(parse_device("\"a")
            .unwrap_err()
            .starts_with("failed to parse csv devices: "));
    }
}
