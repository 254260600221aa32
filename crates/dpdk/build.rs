//! With the `dpdk` feature: compile the C shim against the installed DPDK,
//! found by `pkg-config libdpdk`, and link DPDK's libraries. Without it:
//! nothing (the default build needs no DPDK).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    shim::build();
}

#[cfg(feature = "dpdk")]
mod shim {
    use std::process::Command;

    fn pkg_config(arg: &str) -> Vec<String> {
        let out = Command::new("pkg-config").args([arg, "libdpdk"]).output();
        match out {
            Ok(o) if o.status.success() => {
                String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_owned).collect()
            }
            Ok(o) => panic!(
                "the dpdk feature needs DPDK's development files: `pkg-config {arg} libdpdk` failed ({}); \
                 install them (apt-get install libdpdk-dev pkg-config) or build without --features dpdk",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "the dpdk feature needs pkg-config to find DPDK ({e}): apt-get install pkg-config libdpdk-dev, \
                 or build without --features dpdk"
            ),
        }
    }

    pub fn build() {
        println!("cargo:rerun-if-changed=src/shim.c");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
        let mut cc = cc::Build::new();
        cc.file("src/shim.c").warnings(true).flag_if_supported("-Wno-unused-parameter");
        for flag in pkg_config("--cflags") {
            cc.flag(&flag);
        }
        cc.compile("ustack_dpdk_shim");
        for flag in pkg_config("--libs") {
            if let Some(lib) = flag.strip_prefix("-l") {
                println!("cargo:rustc-link-lib=dylib={lib}");
            } else if let Some(dir) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            }
        }
    }
}
