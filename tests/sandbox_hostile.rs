//! Hostile programs run through the real bubblewrap sandbox are contained with their named
//! verdict, and the host is unaffected: no network, no host files, no signals to the host, no
//! survivors, bounded memory and output.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;

use distill::sandbox::{Limits, Sandbox, SandboxKind};
use distill::verify::code::{run_tests, CodeGrade, CodeVerdict, TestSuite};

/// The tests check the host for leftover processes, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The user ids the sandbox gives its runs (see `sandbox::process::next_run_uid`).
const RUN_UIDS: std::ops::Range<u32> = 0x4000_0000..0x6000_0000;

fn sandbox(wall_seconds: f64) -> Sandbox {
    let limits = Limits {
        wall_seconds,
        cpu_seconds: 3,
        ..Limits::default()
    };
    Sandbox::new(SandboxKind::Bwrap, limits, Some(2)).expect("bubblewrap works here (see .ci/run)")
}

/// A correct `double` after the hostile `prelude`, graded by two tests.
fn grade(prelude: &str) -> CodeGrade {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let suite = TestSuite::snippets(
        "",
        vec![
            "assert double(2) == 4".into(),
            "assert double(3) == 6".into(),
        ],
    );
    let code = format!("{prelude}\ndef double(x):\n    return 2 * x\n");
    let grade = run_tests(&sandbox(4.0), &suite, &code);
    assert_eq!(
        survivors(),
        Vec::<String>::new(),
        "processes outlived the run"
    );
    grade
}

/// Processes on the host owned by a sandbox run's user id, or whose command line holds a
/// marker of these tests.
fn survivors() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let uid: Option<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
        let marked = String::from_utf8_lossy(&cmdline).contains("distill-hostile-marker");
        if uid.is_some_and(|u| RUN_UIDS.contains(&u)) || marked {
            found.push(format!(
                "{:?}: {}",
                entry.file_name(),
                String::from_utf8_lossy(&cmdline)
            ));
        }
    }
    found
}

#[test]
fn a_correct_program_passes() {
    let grade = grade("");
    assert_eq!(
        (grade.verdict, grade.passed(), grade.total()),
        (CodeVerdict::Passed, 2, 2)
    );
}

#[test]
fn an_infinite_loop_times_out() {
    let started = std::time::Instant::now();
    let grade = grade("while True:\n    pass");
    assert_eq!((grade.verdict, grade.passed()), (CodeVerdict::Timeout, 0));
    assert!(
        started.elapsed().as_secs_f64() < 8.0,
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_fork_bomb_hits_the_process_limit() {
    let grade = grade("import os\nwhile True:\n    os.fork()");
    assert_eq!(grade.verdict, CodeVerdict::RuntimeError);
}

#[test]
fn allocating_20_gb_hits_the_memory_limit() {
    let grade = grade("hoard = bytearray(20 * 1024 ** 3)");
    assert_eq!(grade.verdict, CodeVerdict::MemoryLimit);
}

#[test]
fn there_is_no_network() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let grade = grade(&format!(
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')"
    ));
    assert_eq!(grade.verdict, CodeVerdict::RuntimeError);
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the program reached the host's listener"
    );
}

#[test]
fn host_files_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "distill-secret-4711").unwrap();
    let grade = grade(&format!(
        "leaked = open({:?}).read()\nassert 'distill-secret' not in leaked",
        secret.to_str().unwrap()
    ));
    assert_eq!(grade.verdict, CodeVerdict::RuntimeError);
}

#[test]
fn the_project_directory_cannot_be_written() {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox-escape.txt");
    let _ = std::fs::remove_file(&target);
    let grade = grade(&format!(
        "open({:?}, 'w').write('escaped')",
        target.to_str().unwrap()
    ));
    assert_eq!(grade.verdict, CodeVerdict::RuntimeError);
    assert!(
        !target.exists(),
        "the program wrote into the project directory"
    );
}

#[test]
fn killing_the_parent_does_not_reach_the_host() {
    let grade = grade("import os\nos.kill(os.getppid(), 9)");
    // The parent inside is the PID namespace's init, owned by another user: the kill is refused.
    assert_eq!(grade.verdict, CodeVerdict::RuntimeError);
    // This test process (the program's real ancestor) is still running to check it.
    std::io::stdout().flush().unwrap();
}

#[test]
fn a_double_forked_daemon_does_not_outlive_the_run() {
    let daemon = "import os, sys\n\
if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        \
os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', 'distill-hostile-marker'])\n    \
os._exit(0)\n\
import time\ntime.sleep(0.5)";
    let grade = grade(daemon);
    assert_eq!(grade.verdict, CodeVerdict::Passed);
    // `grade` asserted that no process with the marker survived.
}

#[test]
fn a_gigabyte_of_stdout_is_capped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = sandbox(30.0);
    let program =
        "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)";
    let outcome = sandbox.run(&["-c".into(), program.into()], b"").unwrap();
    let cap = sandbox.limits().output_bytes;
    assert_eq!(outcome.stdout.len(), cap);
    assert!(
        outcome.timed_out || outcome.stdout_total == 1 << 30,
        "{} bytes",
        outcome.stdout_total
    );
    assert_eq!(survivors(), Vec::<String>::new());
}
