//! Where nginx's stream module is: built in, or a dynamic module in nginx's modules path
//! (Debian: the package libnginx-mod-stream).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `None` when the stream module is built in, its file when it is dynamic; an error saying
/// what to install when nginx has none.
pub fn stream_module(nginx: &Path) -> Result<Option<PathBuf>, String> {
    let out = Command::new(nginx)
        .arg("-V")
        .output()
        .map_err(|e| format!("{}: {e}", nginx.display()))?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    from_build_flags(&text)
}

/// Decides from `nginx -V` output.
pub fn from_build_flags(text: &str) -> Result<Option<PathBuf>, String> {
    let flags: Vec<&str> = text.split_whitespace().collect();
    if flags.contains(&"--with-stream") {
        return Ok(None);
    }
    let missing = "nginx has no stream module; install libnginx-mod-stream (Debian) or an nginx \
                   built --with-stream";
    if !flags.contains(&"--with-stream=dynamic") {
        return Err(missing.into());
    }
    let dir = flags
        .iter()
        .find_map(|f| f.strip_prefix("--modules-path="))
        .unwrap_or("modules");
    let file = Path::new(dir).join("ngx_stream_module.so");
    if file.exists() {
        Ok(Some(file))
    } else {
        Err(format!("{}: not found; {missing}", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_stream_needs_no_module() {
        assert_eq!(
            from_build_flags("configure arguments: --with-stream --with-http_ssl_module"),
            Ok(None)
        );
    }

    #[test]
    fn nginx_without_stream_is_an_error_naming_the_package() {
        let e = from_build_flags("configure arguments: --with-http_ssl_module").unwrap_err();
        assert!(e.contains("libnginx-mod-stream"), "{e}");
    }

    #[test]
    fn dynamic_stream_module_must_exist_in_the_modules_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags = format!(
            "--modules-path={} --with-stream=dynamic",
            dir.path().display()
        );
        assert!(from_build_flags(&flags).unwrap_err().contains("not found"));
        std::fs::write(dir.path().join("ngx_stream_module.so"), b"").expect("write");
        assert_eq!(
            from_build_flags(&flags),
            Ok(Some(dir.path().join("ngx_stream_module.so")))
        );
    }
}
