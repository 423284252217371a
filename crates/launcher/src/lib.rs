//! The ferrovirt launcher: everything one VM needs on its node, one module per concern.
//!
//! ```text
//!   node agent ──creates──▶ cgroup (cgroup)          launcher process (one per VM)
//!                                                     │
//!                     qemu_argv(QemuConfig) ──────────┼──▶ qemu-system-x86_64 ...
//!                                                     │        │ qmp.sock      │ serial.sock
//!                     Qmp (actor, events) ◀───────────┼────────┘               │
//!                     Console ◀───────────────────────┼────────────────────────┘
//!                       ├──▶ serial.log, serial.log.1, ... (rotated)
//!                       └──▶ console.sock ◀── any number of clients
//! ```
//!
//! - [`qemu`]: the QEMU command line, built as a pure function from a [`qemu::QemuConfig`]; every
//!   user-controlled string is escaped or refused and every path is confined to the VM's folder.
//! - [`qmp`]: an async QMP client; one task owns the socket, callers send it commands.
//! - [`cgroup`]: the VM's cgroup on cgroup v1 or v2 (memory, CPU and pid limits).
//! - [`console`]: the serial console: a rotating `serial.log` and a fan-out socket for clients.
//! - [`probe`]: whether KVM really runs a guest here, found by booting a tiny one.

pub mod cgroup;
pub mod console;
pub mod probe;
pub mod qemu;
pub mod qmp;
pub mod process;
pub mod spec;

pub use cgroup::{CgroupError, CgroupLimits, CgroupVersion, VmCgroup};
pub use console::{Console, ConsoleConfig, ConsoleError, LogRotation};
pub use probe::{probe_accel, AccelProbe, BootProbe, DevKvm, ProbeError};
pub use qemu::{qemu_argv, ArgvError, QemuConfig};
pub use qmp::{Qmp, QmpError, QmpEvent};
