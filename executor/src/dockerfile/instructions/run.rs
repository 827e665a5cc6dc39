//! `RUN`'s options read when the Dockerfile is parsed: `--network`, `--security`,
//! `--mount` (fully when it holds no variable, see `arguments`) and `--device`.
//! The messages are BuildKit's; a value outside a fixed set also lists the set.

use super::arguments::parse_mount_at_parse_time;
use super::device::{self, DeviceSpecError};
use super::flags::FlagValues;
use super::mount::{MountSpecError, SuggestOrAllowed};
use super::{NetworkMode, RunCommand, SecurityMode, ShellOrExec};
use crate::dockerfile::ast::Node;
use crate::dockerfile::dump::go_quote;

/// The values of `--network`.
pub const NETWORK_MODES: &[&str] = &["default", "none", "host"];
/// The values of `--security`.
pub const SECURITY_MODES: &[&str] = &["sandbox", "insecure"];

/// Why a RUN's options are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunOptionError {
    #[error("invalid network mode {}{suggestion}", go_quote(.value))]
    Network {
        value: String,
        suggestion: SuggestOrAllowed,
    },
    #[error("security {} is not valid{suggestion}", go_quote(.value))]
    Security {
        value: String,
        suggestion: SuggestOrAllowed,
    },
    #[error(transparent)]
    Mount(#[from] MountSpecError),
    #[error(transparent)]
    Device(#[from] DeviceSpecError),
}

/// The RUN command of `node`, whose flags are `flags`.
pub(super) fn run_command(
    node: &Node,
    flags: &FlagValues,
    escape: char,
    command: ShellOrExec,
) -> Result<RunCommand, RunOptionError> {
    let network = match flags.string("network").as_deref() {
        None | Some("default") => NetworkMode::Default,
        Some("none") => NetworkMode::None,
        Some("host") => NetworkMode::Host,
        Some(other) => {
            return Err(RunOptionError::Network {
                value: other.to_string(),
                suggestion: SuggestOrAllowed::of(other, NETWORK_MODES),
            })
        }
    };
    let security = match flags.string("security").as_deref() {
        None | Some("sandbox") => SecurityMode::Sandbox,
        Some("insecure") => SecurityMode::Insecure,
        Some(other) => {
            return Err(RunOptionError::Security {
                value: other.to_string(),
                suggestion: SuggestOrAllowed::of(other, SECURITY_MODES),
            })
        }
    };
    let mount_specs = flags.list("mount");
    let mounts = mount_specs
        .iter()
        .map(|spec| parse_mount_at_parse_time(spec, escape))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = flags
        .list("device")
        .iter()
        .map(|spec| device::parse_device(spec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunCommand {
        command,
        heredocs: node.heredocs.clone(),
        mounts,
        mount_specs,
        network,
        security,
        devices,
    })
}
