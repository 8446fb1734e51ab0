//! The `hearth` binary's operator commands, run as a child process from the repo root:
//! `init`, `validate`, `translate`, `audit verify`, and `serve`'s first start.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `hearth ARGS` with the repo root as the current directory and no Hearth
/// environment variables leaking in from the caller.
fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .current_dir(root())
        .env_remove("HEARTH_CONFIG")
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("HEARTH_LISTEN")
        .env("RUST_LOG", "off")
        .output()
        .expect("the hearth binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

fn json_stdout(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(o)))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

// --- init -------------------------------------------------------------------------------

#[test]
fn init_prints_four_principals_and_writes_only_token_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    let o = hearth(&["init", path_str(&dir), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = json_stdout(&o);

    let config = PathBuf::from(
        out["config"]
            .as_str()
            .unwrap_or_else(|| panic!("no `config` path: {out}")),
    );
    assert_eq!(config, dir.join("hearth.toml"), "{out}");
    assert!(config.is_file(), "{} was not written", config.display());

    let principals = out["principals"]
        .as_array()
        .unwrap_or_else(|| panic!("no `principals`: {out}"));
    assert_eq!(principals.len(), 4, "{out}");
    let mut roles: Vec<&str> = principals
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["auditor", "clinic", "housing", "mco"], "{out}");

    let text = std::fs::read_to_string(&config).unwrap();
    let mut tokens = Vec::new();
    for p in principals {
        for key in ["id", "org", "token"] {
            assert!(
                p[key].as_str().is_some_and(|s| !s.is_empty()),
                "principal lacks `{key}`: {p}"
            );
        }
        let token = p["token"].as_str().unwrap();
        assert!(token.len() >= 20, "token too short to be a secret: {token}");
        assert!(
            !text.contains(token),
            "the config file holds a plaintext token"
        );
        let hash = hearth::auth::hash_token(token);
        assert!(
            text.contains(&hash),
            "the config does not hold the hash of {}'s token",
            p["id"]
        );
        tokens.push(token.to_string());
    }
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "tokens are not distinct");

    // The file is a config `hearth serve` accepts, pointing at the repo's mappings and
    // profiles by absolute path and at a data directory beside it.
    let loaded = hearth::config::Config::load(&config).expect("the written config loads");
    assert!(
        loaded.mappings_dir.is_absolute() && loaded.mappings_dir.join("valuesets.toml").is_file()
    );
    assert!(loaded.profiles_dir.is_absolute() && loaded.profiles_dir.is_dir());
    assert!(
        loaded.data_dir.starts_with(&dir),
        "{}",
        loaded.data_dir.display()
    );
}

#[test]
fn init_twice_fails_and_leaves_the_first_config_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = hearth(&["init", path_str(dir), "--json"]);
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let before = std::fs::read(dir.join("hearth.toml")).unwrap();

    for args in [
        vec!["init", path_str(dir), "--json"],
        vec!["init", path_str(dir)],
    ] {
        let again = hearth(&args);
        assert!(
            !again.status.success(),
            "second init succeeded:\n{}",
            describe(&again)
        );
        assert!(
            stderr(&again).contains("already exists"),
            "the refusal should say why:\n{}",
            describe(&again)
        );
        // No fresh credentials are printed for a config that was not written.
        assert!(!stdout(&again).contains("token"), "{}", describe(&again));
        assert_eq!(
            std::fs::read(dir.join("hearth.toml")).unwrap(),
            before,
            "the config was overwritten"
        );
    }
}

// --- validate ---------------------------------------------------------------------------

#[test]
fn validate_rejects_a_communication_without_status() {
    let o = hearth(&[
        "validate",
        "fixtures/invalid-communication-missing-status.json",
        "--profiles",
        "profiles",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let outcome = json_stdout(&o);
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    let expressions: Vec<&str> = outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error")
        .flat_map(|i| i["expression"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        expressions.contains(&"Communication.status"),
        "expected an error at Communication.status, got {expressions:?}\n{outcome}"
    );
}

#[test]
fn validate_rejects_every_invalid_fixture_with_an_error_issue() {
    for name in [
        "invalid-careplan-missing-intent.json",
        "invalid-communication-bad-date.json",
        "invalid-communication-missing-status.json",
        "invalid-contained-flag-bad-status.json",
        "invalid-not-a-communication.json",
    ] {
        let o = hearth(&[
            "validate",
            &format!("fixtures/{name}"),
            "--profiles",
            "profiles",
        ]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", describe(&o));
        let outcome = json_stdout(&o);
        let errors = outcome["issue"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["severity"] == "error")
            .count();
        assert!(errors > 0, "{name}: no error issue in {outcome}");
    }
}

#[test]
fn validate_accepts_the_valid_fixtures() {
    for name in [
        "discharge-notice.json",
        "discharge-notice-oversharing.json",
        "medication-change-notice.json",
        "medication-change-dose-changed.json",
        "medication-change-buprenorphine-start.json",
        "appointment-notice.json",
        "risk-flag-update.json",
        "care-contact-update.json",
        "accommodation-needs.json",
        "follow-up-plan.json",
        "consent-share-with-clinic.json",
        "consent-clinic-and-mco-no-sud.json",
    ] {
        let o = hearth(&[
            "validate",
            &format!("fixtures/{name}"),
            "--profiles",
            "profiles",
        ]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", describe(&o));
        let outcome = json_stdout(&o);
        assert_eq!(
            outcome["resourceType"], "OperationOutcome",
            "{name}: {outcome}"
        );
        assert!(
            outcome["issue"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["severity"] != "error"),
            "{name}: {outcome}"
        );
    }
}

#[test]
fn validate_reports_an_unreadable_file_without_an_outcome() {
    let o = hearth(&[
        "validate",
        "fixtures/no-such-file.json",
        "--profiles",
        "profiles",
    ]);
    assert!(!o.status.success(), "{}", describe(&o));
    assert_ne!(
        o.status.code(),
        Some(1),
        "exit 1 means `not acceptable`, not `could not read`"
    );
    assert!(stderr(&o).contains("no-such-file.json"), "{}", describe(&o));
}

// --- translate --------------------------------------------------------------------------

#[test]
fn translate_keeps_the_discharge_and_drops_the_oversharing() {
    let o = hearth(&[
        "translate",
        "fixtures/discharge-notice-oversharing.json",
        "--mappings",
        "mappings",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let text = stdout(&o);
    let t = json_stdout(&o);

    let items = t["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {t}"));
    assert_eq!(items.len(), 1, "only the discharge: {t}");
    let d = &items[0];
    assert_eq!(d["item"], "discharge", "{t}");
    assert_eq!(d["status"], "discharged");
    assert_eq!(d["date"], "2026-11-20T11:30:00-08:00");
    assert_eq!(d["facility"], "Riverside General Hospital");
    assert_eq!(d["follow_up"].as_array().map(Vec::len), Some(1), "{t}");
    assert_eq!(d["follow_up"][0]["due"], "2026-11-27");
    assert_eq!(d["follow_up"][0]["owner"], "Riverside Community Clinic");
    // The SUD-coded content is only in dropped parts.
    assert!(
        d["labels"]
            .as_array()
            .is_none_or(|l| !l.iter().any(|x| x == "SUD")),
        "the discharge should carry no SUD label: {d}"
    );

    let dropped: Vec<&str> = t["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "Communication.note",
        "Communication.text",
        "Communication.extension",
        "Communication._status",
        "Communication.payload",
    ] {
        assert!(
            dropped.contains(&expected),
            "`{expected}` not reported dropped: {dropped:?}"
        );
    }
    for path in &dropped {
        assert!(path.starts_with("Communication"), "{path}");
    }

    for secret in [
        "Closed fracture of left distal radius",
        "Unspecified fracture of the lower end of left radius",
        "S52.502A",
        "Opioid use disorder",
        "Opioid dependence",
        "75544000",
        "Methadone",
        "methadone",
        "Marta Nowak",
        "Nowak",
        "(951) 555-0173",
        "Halina",
        "Kowalczyk",
        "1955-03-08",
        "Blood alcohol",
        "drinking",
        "tearful",
        "Fall at home on the stairs",
        "daughter to stay",
        "auto-sent",
    ] {
        assert!(
            !text.contains(secret),
            "translate printed `{secret}`:\n{text}"
        );
    }
}

#[test]
fn translate_fails_on_a_recognised_item_missing_a_required_field() {
    // A medication-change notice whose MedicationRequest has no readable medication.
    let tmp = tempfile::tempdir().unwrap();
    let mut r: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/medication-change-notice.json")).unwrap(),
    )
    .unwrap();
    let contained = r["contained"].as_array_mut().unwrap();
    for c in contained
        .iter_mut()
        .filter(|c| c["resourceType"] == "MedicationRequest")
    {
        c.as_object_mut()
            .unwrap()
            .remove("medicationCodeableConcept");
        c.as_object_mut().unwrap().remove("medicationReference");
    }
    let file = tmp.path().join("no-medication.json");
    std::fs::write(&file, r.to_string()).unwrap();
    let o = hearth(&["translate", path_str(&file), "--mappings", "mappings"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let t = json_stdout(&o);
    let problems = t["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems: {t}"));
    assert!(
        problems.iter().any(|p| p["expression"]
            .as_str()
            .is_some_and(|e| e.starts_with("Communication.contained["))),
        "{t}"
    );
}

// --- audit verify -----------------------------------------------------------------------

#[test]
fn audit_verify_on_an_empty_directory_says_there_is_no_store() {
    let tmp = tempfile::tempdir().unwrap();
    let o = hearth(&["audit", "verify", "--data-dir", path_str(tmp.path())]);
    assert!(!o.status.success(), "{}", describe(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no store"),
        "unclear message:\n{}",
        describe(&o)
    );
    assert!(
        err.contains(path_str(tmp.path())),
        "the message should name the directory:\n{}",
        describe(&o)
    );
    assert!(!stdout(&o).contains("OK"), "{}", describe(&o));
    // Verifying must not create a store as a side effect.
    assert!(
        !tmp.path().join("hearth.db").exists(),
        "audit verify created a store"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "audit verify wrote into the directory"
    );
}

// --- serve, first start ------------------------------------------------------------------

/// `GET path` over plain HTTP/1.0; the status code, or None while nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

/// The first `serve` with `--data-dir` and `--listen`: the config it writes, the store and
/// the `audit` commands all use that one directory, and the config is its owner's alone.
#[test]
fn the_first_serve_keeps_its_config_and_store_in_the_data_dir_it_was_given() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("store");
    // An operator's own directory, readable by others: the files Hearth puts in it are
    // still its owner's alone.
    std::fs::create_dir(&data).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--data-dir", path_str(&data), "--listen", &listen])
        .current_dir(root())
        .env_remove("HEARTH_CONFIG")
        .env_remove("HEARTH_DATA_DIR")
        .env_remove("HEARTH_LISTEN")
        .env("RUST_LOG", "off")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ready = loop {
        if let Some(status) = http_status(port, "/readyz") {
            break status;
        }
        if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
            break 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let printed = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert_eq!(ready, 200, "{printed}");
    let config = data.join("hearth.toml");
    assert!(printed.contains(path_str(&config)), "{printed}");
    // Its output is a log here, not a terminal: the tokens are not in it, but in a file
    // only the owner can read, which the output names.
    let credentials = data.join("first-start-credentials.txt");
    assert!(printed.contains(path_str(&credentials)), "{printed}");
    assert!(!printed.contains("hth_"), "tokens in the log: {printed}");
    let tokens = std::fs::read_to_string(&credentials).unwrap();
    assert_eq!(tokens.matches("token=hth_").count(), 4, "{tokens}");
    assert!(data.join("hearth.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let store = data.join("hearth.db");
        let log = data.join("hearth.db-wal");
        let shm = data.join("hearth.db-shm");
        let logs: Vec<&std::path::PathBuf> =
            [&log, &shm].into_iter().filter(|f| f.exists()).collect();
        for file in [&config, &credentials, &store].into_iter().chain(logs) {
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }
    let verify = hearth(&["audit", "verify", "--data-dir", path_str(&data)]);
    assert!(verify.status.success(), "{}", describe(&verify));
}

/// Rotating a token: `hearth token` prints a new one and the config entry whose hash
/// matches it, and that entry is accepted by the config it is added to.
#[test]
fn a_new_token_comes_with_the_principal_entry_that_accepts_it() {
    // An id with a quote in it still makes an entry the config reads.
    let o = hearth(&[
        "token",
        "riverside-ehr \"2\"",
        "--org",
        "riverside-clinic",
        "--role",
        "clinic",
    ]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    let token = out
        .lines()
        .find(|l| l.starts_with("hth_"))
        .expect("the token is printed")
        .to_string();
    let entry = &out[out.find("[[principals]]").expect("the entry is printed")..];
    let hash = entry
        .lines()
        .find_map(|l| l.strip_prefix("token_sha256 = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(hash, hearth::auth::hash_token(&token));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cfg");
    assert!(hearth(&["init", path_str(&dir)]).status.success());
    let config = dir.join("hearth.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push('\n');
    text.push_str(entry);
    let parsed = hearth::config::Config::from_toml(&text).unwrap();
    let principals = parsed.principals();
    let who = principals
        .authenticate(&token)
        .expect("the new token signs in");
    assert_eq!(who.org.as_str(), "riverside-clinic");
    assert_eq!(who.id, "riverside-ehr \"2\"");
    let bad = hearth(&[
        "token",
        "x",
        "--org",
        "riverside-clinic",
        "--role",
        "superuser",
    ]);
    assert!(!bad.status.success());
}
