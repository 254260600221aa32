//! `include/ustack.h` is kept by hand: it must declare exactly the functions
//! `src/ffi.rs` exports, and a C program taking the address of each must
//! compile warning-free and link against the library.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

fn names(text: &str, prefix: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let at = l.find(prefix)?;
            let rest = &l[at + prefix.len() - "ustack_".len()..];
            let end = rest.find('(')?;
            Some(rest[..end].trim().to_string())
        })
        .filter(|n| n.starts_with("ustack_") && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect()
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let header = std::fs::read_to_string(format!("{dir}/include/ustack.h")).unwrap();
    let ffi = std::fs::read_to_string(format!("{dir}/src/ffi.rs")).unwrap();
    let declared: BTreeSet<String> =
        header.lines().filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*")).flat_map(|l| names(l, " ustack_")).collect();
    let exported = names(&ffi, "extern \"C\" fn ustack_");
    assert!(exported.len() >= 29, "exports found: {exported:?}");
    assert_eq!(declared, exported, "ustack.h and src/ffi.rs disagree");

    // Every declaration links: take each function's address in C.
    let lib = support::cdylib("ustack-capi", "ustack_capi");
    let tmp = support::TempDir::new("header");
    let mut c = String::from("#include \"ustack.h\"\n#include <stdio.h>\nint main(void) {\n    void *f[] = {\n");
    for n in &declared {
        c += &format!("        (void *){n},\n");
    }
    c += "    };\n    printf(\"%zu\\n\", sizeof f / sizeof f[0]);\n    return 0;\n}\n";
    std::fs::write(tmp.path("all.c"), c).unwrap();
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wno-pedantic"])
        .arg(format!("-I{dir}/include"))
        .arg(tmp.path("all.c"))
        .arg("-o")
        .arg(tmp.path("all"))
        .arg(&lib)
        .output()
        .expect("run cc");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));

    // The example compiles warning-free against the header.
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{dir}/include"))
        .arg(format!("{dir}/examples/echo.c"))
        .arg("-o")
        .arg(tmp.path("echo"))
        .arg(&lib)
        .output()
        .expect("run cc");
    assert!(out.status.success(), "cc echo.c: {}", String::from_utf8_lossy(&out.stderr));
}
