//! Path confinement for the QEMU command line, decided lexically (the filesystem is never read).
//!
//! ```text
//!   /data/pods/<uid>/disk.qcow2          ok: inside the VM folder (read-write)
//!   /var/cache/ferrovirt/img/base.raw    ok only where read-only, and only if that folder is allowed
//!   /data/pods/<uid>/../other/disk       refused: `..` is never accepted (a symlink makes `a/b/..`
//!                                        differ from `a`, so normalising it away would be a guess)
//!   disk.qcow2                           refused: relative
//! ```
//!
//! `.` components and repeated slashes are dropped, so the path emitted is the normal form of the
//! one given. Paths must be UTF-8 and free of control characters.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused; `ArgvError` adds which VM and which use of the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("is not absolute")]
    Relative,
    #[error("contains a `..` component; give the path without it")]
    ParentComponent,
    #[error("is not valid UTF-8")]
    NotUtf8,
    #[error("contains a control character")]
    ControlCharacter,
    #[error("is outside the VM folder {vm_dir}{}", allowed_suffix(.read_only_dirs))]
    Outside {
        vm_dir: PathBuf,
        read_only_dirs: Vec<PathBuf>,
    },
    #[error("is in the read-only folder {dir}, but QEMU would open it for writing; copy it into the VM folder or mark the disk read-only")]
    WritableInReadOnlyDir { dir: PathBuf },
    #[error("is the folder itself, not a file inside it")]
    IsTheFolder,
}

fn allowed_suffix(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!(" and the read-only folders [{}]", list.join(", "))
    }
}

/// Lexically normalises an absolute path: drops `.` and repeated separators, refuses `..`,
/// relative paths, non-UTF-8 and control characters.
pub(crate) fn normalise(path: &Path) -> Result<PathBuf, PathProblem> {
    let text = path.to_str().ok_or(PathProblem::NotUtf8)?;
    if text.chars().any(char::is_control) {
        return Err(PathProblem::ControlCharacter);
    }
    let mut out = PathBuf::new();
    let mut components = path.components();
    match components.next() {
        Some(Component::RootDir) => out.push("/"),
        _ => return Err(PathProblem::Relative),
    }
    for component in components {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathProblem::ParentComponent),
            Component::RootDir | Component::Prefix(_) => return Err(PathProblem::Relative),
        }
    }
    Ok(out)
}

/// How a path will be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadOnly,
    ReadWrite,
}

/// The folders a VM's paths may point into: its own folder (any access) and read-only folders.
#[derive(Debug, Clone)]
pub(crate) struct Confinement {
    vm_dir: PathBuf,
    read_only_dirs: Vec<PathBuf>,
}

impl Confinement {
    /// The folders themselves must be absolute and free of `..`.
    pub(crate) fn new(
        vm_dir: &Path,
        read_only_dirs: &[PathBuf],
    ) -> Result<Self, (PathBuf, PathProblem)> {
        let vm_dir = normalise(vm_dir).map_err(|p| (vm_dir.to_owned(), p))?;
        let read_only_dirs = read_only_dirs
            .iter()
            .map(|d| normalise(d).map_err(|p| (d.clone(), p)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Confinement {
            vm_dir,
            read_only_dirs,
        })
    }

    /// Returns the normalised path as a string ready for the command line, or why it is refused.
    pub(crate) fn check(&self, path: &Path, access: Access) -> Result<String, PathProblem> {
        let normal = normalise(path)?;
        if normal == self.vm_dir || self.read_only_dirs.contains(&normal) {
            return Err(PathProblem::IsTheFolder);
        }
        if normal.starts_with(&self.vm_dir) {
            return Ok(into_string(normal));
        }
        if let Some(dir) = self.read_only_dirs.iter().find(|d| normal.starts_with(d)) {
            return match access {
                Access::ReadOnly => Ok(into_string(normal)),
                Access::ReadWrite => Err(PathProblem::WritableInReadOnlyDir { dir: dir.clone() }),
            };
        }
        Err(PathProblem::Outside {
            vm_dir: self.vm_dir.clone(),
            read_only_dirs: self.read_only_dirs.clone(),
        })
    }
}

fn into_string(path: PathBuf) -> String {
    // `normalise` has already checked that the path is UTF-8.
    path.into_os_string().into_string().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> Confinement {
        Confinement::new(Path::new("/data/vm1"), &[PathBuf::from("/cache")]).unwrap()
    }

    #[test]
    fn accepts_paths_inside_and_normalises_them() {
        let c = conf();
        assert_eq!(
            c.check(Path::new("/data/vm1/disk.img"), Access::ReadWrite)
                .unwrap(),
            "/data/vm1/disk.img"
        );
        assert_eq!(
            c.check(Path::new("/data//vm1/./a,b/x=y"), Access::ReadWrite)
                .unwrap(),
            "/data/vm1/a,b/x=y"
        );
        assert_eq!(
            c.check(Path::new("/cache/base.raw"), Access::ReadOnly)
                .unwrap(),
            "/cache/base.raw"
        );
    }

    #[test]
    fn refuses_escapes() {
        let c = conf();
        assert_eq!(
            c.check(Path::new("/data/vm1/../vm2/disk"), Access::ReadOnly),
            Err(PathProblem::ParentComponent)
        );
        assert_eq!(
            c.check(Path::new("disk"), Access::ReadOnly),
            Err(PathProblem::Relative)
        );
        assert!(matches!(
            c.check(Path::new("/data/vm10/disk"), Access::ReadOnly),
            Err(PathProblem::Outside { .. })
        ));
        assert!(matches!(
            c.check(Path::new("/etc/shadow"), Access::ReadOnly),
            Err(PathProblem::Outside { .. })
        ));
        assert_eq!(
            c.check(Path::new("/cache/base.raw"), Access::ReadWrite),
            Err(PathProblem::WritableInReadOnlyDir {
                dir: PathBuf::from("/cache")
            })
        );
        assert_eq!(
            c.check(Path::new("/data/vm1/"), Access::ReadOnly),
            Err(PathProblem::IsTheFolder)
        );
        assert_eq!(
            c.check(Path::new("/data/vm1/a\nb"), Access::ReadOnly),
            Err(PathProblem::ControlCharacter)
        );
    }

    #[test]
    fn refuses_non_utf8() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(OsStr::from_bytes(b"/data/vm1/\xff"));
        assert_eq!(conf().check(p, Access::ReadOnly), Err(PathProblem::NotUtf8));
    }

    #[test]
    fn folders_must_be_clean() {
        assert!(Confinement::new(Path::new("/data/../vm"), &[]).is_err());
        assert!(Confinement::new(Path::new("vm"), &[]).is_err());
    }
}
