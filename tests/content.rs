//! The content checker as its users meet it: the real binary's `check-content` (and the start-up check, and
//! `evaluate --format text`) on copies of `cards/` with the mistakes a CDS team makes, checking that each
//! message names the file where it is, the field or line, and the numbers that say what to change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_dry-needling-cds");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A copy of `cards/` under a temporary directory of its own (removed on drop), to break.
struct Copy {
    top: PathBuf,
    cards: PathBuf,
}

impl Copy {
    fn new(tag: &str) -> Copy {
        let top = std::env::temp_dir().join(format!("dn-content-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let cards = top.join("cards");
        copy_tree(&repo("cards"), &cards);
        Copy { top, cards }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.cards.join(file)
    }

    fn edit(&self, file: &str, change: impl FnOnce(String) -> String) {
        let path = self.path(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, change(text)).unwrap();
    }

    /// Sets the summary of one card (`cards/cards/<stem>.toml`).
    fn set_summary(&self, stem: &str, summary: &str) {
        self.edit(&format!("cards/{stem}.toml"), |text| {
            let old = text.lines().find(|l| l.starts_with("summary = ")).unwrap().to_string();
            text.replace(&old, &format!("summary = \"{summary}\""))
        });
    }

    fn append_row(&self, row: &str) {
        self.edit("valuesets/codes.csv", |text| format!("{text}{row}\n"));
    }

    /// The line number in `codes.csv` of the first row that starts with `prefix`.
    fn line_of(&self, prefix: &str) -> usize {
        let text = std::fs::read_to_string(self.path("valuesets/codes.csv")).unwrap();
        text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
    }

    fn lines(&self) -> usize {
        std::fs::read_to_string(self.path("valuesets/codes.csv"))
            .unwrap()
            .lines()
            .count()
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.top);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let Output { status, stdout, stderr } = Command::new(BINARY)
        .args(args)
        .current_dir(cwd)
        .env_remove("DRY_NEEDLING_CDS_CARDS")
        .env_remove("DRY_NEEDLING_CDS_CONFIG")
        .output()
        .unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn check(copy: &Copy) -> (i32, String, String) {
    run(&["check-content", copy.cards.to_str().unwrap()], &copy.top)
}

fn shown(path: PathBuf) -> String {
    path.display().to_string()
}

#[test]
fn the_shipped_cards_are_clean_and_the_summary_says_what_was_checked() {
    let (code, stdout, stderr) = run(&["check-content", "cards"], &repo(""));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("cards: the content is valid: 14 cards"), "{stdout}");
    assert!(stdout.contains("value sets"), "{stdout}");
    // Without DIR, from the project's folder: its `cards/`.
    let (code, default, _) = run(&["check-content"], &repo(""));
    assert_eq!((code, default), (0, stdout));
}

#[test]
fn a_summary_over_the_budget_gets_its_numbers() {
    let copy = Copy::new("budget");
    // 100 characters of fixed text + the longest indication (40) = 140, one over the limit of 139.
    let fixed = format!("Dry needling is not recommended for headache{} (", "x".repeat(53));
    assert_eq!(fixed.chars().count() + 1, 100);
    copy.set_summary("against-headache", &format!("{fixed}{{{{indication}}}})"));
    let (code, stdout, stderr) = check(&copy);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let expected = format!(
        "{}: summary: is 140 characters at most: 100 fixed + 40 for {{{{indication}}}}; the limit is 139 \
         (CDS Hooks: fewer than 140): shorten the fixed text by 1\n",
        shown(copy.path("cards/against-headache.toml"))
    );
    assert_eq!(stdout, expected);
    assert!(stderr.contains("1 problem in"), "{stderr}");

    // One character shorter fits.
    copy.set_summary("against-headache", &format!("{}{{{{indication}}}})", &fixed[1..]));
    let (code, stdout, stderr) = check(&copy);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Two placeholders: each with its own maximum.
    copy.set_summary(
        "myofascial-care-missing",
        &format!(
            "Dry needling for {{{{indication}}}}: {{{{missing}}}} not yet documented{}",
            "!".repeat(7)
        ),
    );
    let (_, stdout, _) = check(&copy);
    assert!(
        stdout.contains(
            "myofascial-care-missing.toml: summary: is 141 characters at most: 45 fixed + 40 for {{indication}} + \
             56 for {{missing}}; the limit is 139 (CDS Hooks: fewer than 140): shorten the fixed text by 2"
        ),
        "{stdout}"
    );
}

#[test]
fn an_unknown_value_set_name_is_an_error_with_the_likely_one() {
    let copy = Copy::new("set");
    copy.append_row(
        "exclude.headach,http://hl7.org/fhir/sid/icd-10-cm,G44.319,\"Acute post-traumatic headache, not \
         intractable\",local: test,",
    );
    let line = copy.lines();
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        format!(
            "{}: line {line}, set: unknown value set `exclude.headach`, so this code could never match: did you \
             mean `exclude.headache`?\n",
            shown(copy.path("valuesets/codes.csv"))
        )
    );
}

#[test]
fn a_duplicate_row_names_both_lines() {
    let copy = Copy::new("duplicate");
    let first = copy.line_of("exclude.headache,http://hl7.org/fhir/sid/icd-10-cm,G44.209,");
    // The same code written without its dot and in lower case is the same code.
    copy.append_row("exclude.headache,http://hl7.org/fhir/sid/icd-10-cm,g44209,Tension-type headache,local: test,");
    let line = copy.lines();
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(&format!(
            "codes.csv: line {line}: duplicate row: `exclude.headache` already lists \
             http://hl7.org/fhir/sid/icd-10-cm g44209 on line {first}; delete one"
        )),
        "{stdout}"
    );
    // The same code in another set is not a duplicate.
    let copy = Copy::new("other-set");
    copy.append_row("cond.neck_pain,http://hl7.org/fhir/sid/icd-10-cm,G44.209,Tension-type headache,local: test,");
    assert_eq!(check(&copy).0, 0);
}

#[test]
fn a_code_system_that_is_not_a_known_uri_is_an_error() {
    let copy = Copy::new("system");
    copy.append_row("exclude.osteoarthritis,ICD-10-CM,M19.011,\"Primary osteoarthritis, right shoulder\",local: test,");
    copy.append_row(
        "exclude.osteoarthritis,http://hl7.org/fhir/sid/icd10-cm,M19.012,\"Primary osteoarthritis, left \
         shoulder\",local: test,",
    );
    // A local code system written as its OID is accepted.
    copy.append_row("order.dry_needling,urn:oid:1.2.840.114350.1.13.0.1.7.2.696580,DN1,Dry needling,local: test,");
    let last = copy.lines();
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].ends_with(&format!(
            "line {}, system: `ICD-10-CM` is not a known code system URI: write one of http://snomed.info/sct, \
             http://hl7.org/fhir/sid/icd-10-cm, http://hl7.org/fhir/sid/icd-9-cm, http://www.ama-assn.org/go/cpt, \
             http://www.nlm.nih.gov/research/umls/rxnorm, http://www.whocc.no/atc, \
             http://fhir.org/guides/cqf/cds4cpm/CodeSystem/pain-therapies, or a local code system as its OID \
             (`urn:oid:1.2.3…`)",
            last - 2
        )),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with(&format!(
            "line {}, system: `http://hl7.org/fhir/sid/icd10-cm` is not a known code system URI: did you mean \
             `http://hl7.org/fhir/sid/icd-10-cm`?",
            last - 1
        )),
        "{stdout}"
    );
}

#[test]
fn several_problems_are_reported_together_with_their_real_paths() {
    let copy = Copy::new("several");
    copy.set_summary(
        "against-headache",
        &format!(
            "Dry needling is not recommended for headache{} ({{{{indication}}}})",
            "y".repeat(60)
        ),
    );
    copy.set_summary("neck-pain-prefer-manual-therapy", "Neck pain: {{indicaton}} first");
    copy.append_row("exclude.headach,http://hl7.org/fhir/sid/icd-10-cm,G44.319,Acute post-traumatic headache,x,");
    copy.append_row("exclude.headache,http://snomed.info/sctt,25064002,Headache,local: test,");
    copy.append_row("exclude.headache,http://hl7.org/fhir/sid/icd-10-cm,G44.209,Tension-type headache,local: test,");
    copy.append_row("exclude.headache,http://hl7.org/fhir/sid/icd-10-cm,G44.1,,");
    std::fs::remove_file(copy.path("cards/confirm-duration.toml")).unwrap();
    let (code, stdout, stderr) = check(&copy);
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let csv = shown(copy.path("valuesets/codes.csv"));
    let card = |stem: &str| shown(copy.path(&format!("cards/{stem}.toml")));
    let expect = [
        format!("{csv}: line "),
        format!("{csv}: line "),
        format!("{csv}: line "),
        format!("{csv}: line "),
        format!(
            "{}: summary: is 147 characters at most: 107 fixed + 40 for {{{{indication}}}}",
            card("against-headache")
        ),
        format!(
            "{}: summary: cannot use `{{{{indicaton}}}}`",
            card("neck-pain-prefer-manual-therapy")
        ),
        format!("{}: file is missing", card("confirm-duration")),
    ];
    assert_eq!(lines.len(), expect.len(), "{stdout}");
    for (line, start) in lines.iter().zip(&expect) {
        assert!(line.starts_with(start.as_str()), "{line}\nshould start with\n{start}");
    }
    for part in [
        "set: unknown value set `exclude.headach`",
        "system: `http://snomed.info/sctt` is not a known code system URI",
        "duplicate row",
        // The display may be empty; the source may not.
        ": source must not be empty",
    ] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
    assert!(stderr.contains("7 problems in"), "{stderr}");

    // The start-up check is the same code, and names the directory given, not `cards/`.
    let dir = copy.cards.to_str().unwrap();
    let fixture = repo("fixtures/rules/headache.json");
    let (code, _, stderr) = run(&["--cards", dir, "evaluate", fixture.to_str().unwrap()], &copy.top);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(&format!("Error: the guidance content in {dir} is invalid")),
        "{stderr}"
    );
    assert!(stderr.contains("7 problems:"), "{stderr}");
    for line in &lines {
        assert!(stderr.contains(line), "{line} not in {stderr}");
    }

    // Without DIR, from a folder with a `cards/`: that one, by the path its author typed.
    let (code, stdout, _) = run(&["check-content"], &copy.top);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("cards/cards/confirm-duration.toml: file is missing"),
        "{stdout}"
    );
    assert!(stdout.contains("cards/valuesets/codes.csv: line "), "{stdout}");
}

#[test]
fn a_stray_card_file_a_toml_mistake_and_an_unquoted_comma_are_located() {
    let copy = Copy::new("toml");
    copy.append_row(
        "exclude.osteoarthritis,http://hl7.org/fhir/sid/icd-10-cm,M19.011,Primary osteoarthritis, right \
         shoulder,local: test,",
    );
    let line = copy.lines();
    std::fs::copy(
        copy.path("cards/against-headache.toml"),
        copy.path("cards/against-headaches.toml"),
    )
    .unwrap();
    copy.edit("cards/against-osteoarthritis.toml", |t| {
        t.replacen("indicator = \"warning\"", "indicator = \"loud\"", 1)
    });
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("against-osteoarthritis.toml: line 1: unknown variant `loud`"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "against-headaches.toml: no rule produces this card (the cards are against-chronic-low-back-pain"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "codes.csv: line {line}: 7 columns, but the header has 6 (set,system,code,display,source,note): put a \
             display or source that holds a comma in double quotes (\"Lumbago with sciatica, left side\")"
        )),
        "{stdout}"
    );
}

#[test]
fn evaluate_prints_the_cards_as_a_clinician_reads_them() {
    let fixture = repo("fixtures/real/clbp-neck-ibuprofen.order-select.json");
    let args = [
        "evaluate",
        "--as-of",
        "2026-11-23",
        "--format",
        "text",
        fixture.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = run(&args, &repo(""));
    assert_eq!(code, 0, "{stderr}");
    let rule = "=".repeat(78);
    assert!(
        stdout.starts_with(&format!(
            "{rule}\n[WARNING] Dry needling is not recommended for chronic low back pain\n{rule}\n\n**Do not order"
        )),
        "{stdout}"
    );
    for part in [
        "**Conditions considered**\n\n- **Chronic low back pain** (SNOMED CT 278860009)",
        "\nSource: Guideline summary on dry needling",
        "\nSuggestions (the clinician may take at most one):\n  [Replace dry needling with therapeutic exercise] \
         (recommended)\n    delete: Remove the dry-needling order\n    create: Add a draft order: Therapeutic exercise\n",
        "\nLinks: none\n",
        "\nOverride reasons: ",
        "\nCard template: cards/cards/against-chronic-low-back-pain.toml\n",
    ] {
        assert!(stdout.contains(part), "{part}\n---\n{stdout}");
    }
    assert!(!stdout.contains("uuid") && !stdout.contains('{'), "{stdout}");

    // The default stays the JSON the EHR receives.
    let (code, json, _) = run(
        &args[..3].iter().chain(&args[5..]).copied().collect::<Vec<_>>(),
        &repo(""),
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["cards"][0]["extension"]["dry-needling-cds-card"],
        "against-chronic-low-back-pain"
    );

    // No card: what the EHR would be told instead, and exit status 1.
    let fixture = repo("fixtures/rules/prefetch-absent-no-reason.json");
    let (code, stdout, _) = run(&["evaluate", "--format", "text", fixture.to_str().unwrap()], &repo(""));
    assert_eq!(code, 1);
    assert!(
        stdout.starts_with("No cards: the service would answer HTTP 412.\n  Condition data is unavailable"),
        "{stdout}"
    );
}

/// docs/codes.md, step by step: SNOMED CT 318721000119100 is in no value set, so the order gets the unrecognised-indication
/// card; added to `exclude.osteoarthritis` in a copy, previewed with `--cards`, the answer changes.
#[test]
fn adding_a_code_changes_the_answer_without_a_rebuild() {
    let fixture = repo("fixtures/authoring/shoulder-osteoarthritis.json");
    let fixture = fixture.to_str().unwrap();
    let summary = |cards: Option<&str>| {
        let mut args = vec!["evaluate", "--as-of", "2026-11-23", "--format", "text", fixture];
        if let Some(dir) = cards {
            args.extend(["--cards", dir]);
        }
        let (code, stdout, stderr) = run(&args, &repo(""));
        assert_eq!(code, 0, "{stderr}");
        stdout.lines().nth(1).unwrap().to_string()
    };
    assert!(summary(None).starts_with("[WARNING] Dry needling for an unrecognised indication: not first line"));
    let copy = Copy::new("add-code");
    copy.append_row(
        "exclude.osteoarthritis,http://snomed.info/sct,318721000119100,Osteoarthritis of joint of right shoulder \
         region (disorder),\"local: VSAC 2.16.840.1.113762.1.4.1222.648; added by the CDS team\",",
    );
    assert_eq!(check(&copy).0, 0);
    assert_eq!(
        summary(copy.cards.to_str()),
        "[WARNING] Dry needling is not recommended for osteoarthritis (osteoarthritis of joint of right shoulder \
         region)"
    );
}

// ---------------------------------------------------------------------------------------------------------
// The content's version (docs/versions.md).

fn version_of(copy: &Copy) -> dry_needling_cds::content::ContentVersion {
    let source = dry_needling_cds::ContentSource::Directory(copy.cards.clone());
    dry_needling_cds::Knowledge::load(&source).unwrap().version
}

/// The same files give the same version whether embedded or read from a directory; any edit of a content file
/// (a card's wording, a value set's row, the policy) gives another digest under the same declared version;
/// notes beside the content change nothing.
#[test]
fn any_edit_of_the_content_changes_its_version_and_only_that() {
    let embedded = dry_needling_cds::Knowledge::embedded().unwrap().version;
    assert_eq!(embedded.declared, "2026.12.0");
    assert_eq!(embedded.digest.len(), 12);
    assert!(embedded.digest.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(embedded.label, format!("{}+{}", embedded.declared, embedded.digest));

    let copy = Copy::new("version");
    assert_eq!(version_of(&copy), embedded, "a copy of cards/ is the same content");
    std::fs::write(copy.path("NOTES.md"), "a note beside the content").unwrap();
    assert_eq!(version_of(&copy), embedded, "a note is not content");

    let mut seen = vec![embedded.digest.clone()];
    let mut edited = |what: &str, edit: &dyn Fn(&Copy)| {
        let copy = Copy::new(&format!("version-{}", seen.len()));
        edit(&copy);
        let version = version_of(&copy);
        assert_eq!(version.declared, "2026.12.0", "{what}");
        assert!(!seen.contains(&version.digest), "{what}: the digest did not change");
        seen.push(version.digest);
    };
    edited("a card's wording", &|c| {
        c.set_summary("neck-pain-prefer-manual-therapy", "Prefer manual therapy first.")
    });
    edited("a value-set row", &|c| {
        c.append_row("cond.neck_pain,http://snomed.info/sct,279039007,Low back pain,test,")
    });
    edited("the policy", &|c| {
        c.edit("service.toml", |t| {
            t.replace("care_max_age_days = 180", "care_max_age_days = 181")
        })
    });

    let copy = Copy::new("version-undeclared");
    copy.edit("service.toml", |t| t.replace("content_version = \"2026.12.0\"\n", ""));
    assert_eq!(
        version_of(&copy).declared,
        "unversioned",
        "a content directory from before versions still loads"
    );
}

#[test]
fn check_content_prints_the_version_and_refuses_one_that_is_not() {
    let (code, stdout, stderr) = run(&["check-content", "cards"], &repo(""));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let label = dry_needling_cds::Knowledge::embedded().unwrap().version.label;
    assert!(stdout.contains(&format!("content version {label}")), "{stdout}");

    let copy = Copy::new("bad-version");
    copy.edit("service.toml", |t| {
        t.replace("content_version = \"2026.12.0\"", "content_version = \"2026 12 <b>\"")
    });
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("service.toml") && stdout.contains("content_version"),
        "{stdout}"
    );
    assert!(stdout.contains("is not a version"), "{stdout}");
}

/// `source-attributes.toml` (ONC HTI-1, docs/source-attributes.md) is checked like every content file: missing,
/// a card template or service without an entry, an entry for none, an unknown key, a malformed date, an unknown
/// without who must supply it, a reference that does not exist; each named by file and field.
#[test]
fn the_source_attributes_are_checked_with_the_content() {
    const FILE: &str = "source-attributes.toml";
    let copy = Copy::new("attributes-missing");
    std::fs::remove_file(copy.path(FILE)).unwrap();
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    let file = shown(copy.path(FILE));
    assert!(stdout.contains(&format!("{file}: file is missing")), "{stdout}");

    let copy = Copy::new("attributes-entries");
    copy.edit(FILE, |t| {
        let headache = t.find("[cards.against-headache]").unwrap();
        let next = headache + t[headache..].find("\n[cards.against-osteoarthritis]").unwrap();
        let t = format!("{}{}", &t[..headache], &t[next + 1..]);
        t.replace(
            "[services.dry-needling-order-sign]",
            "[services.dry-needling-order-sing]",
        )
        .replacen("released = \"2026-11-23\"", "released = \"23 November 2026\"", 1)
        .replacen(
            "supplied_by = \"the content owner, from the publisher (Dr.Oracle)\" }",
            "supplied_by = \" \" }",
            1,
        )
        .replacen(
            "references = [\"guideline-summary\", ",
            "references = [\"guideline-sumary\", ",
            1,
        )
    });
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    let file = shown(copy.path(FILE));
    for expected in [
        format!("{file}: [cards.against-headache]: every card template needs its source attributes"),
        format!(
            "{file}: [services.dry-needling-order-sign]: every service of service.toml needs its source attributes"
        ),
        format!("{file}: [services.dry-needling-order-sing]: service.toml has no service of this id"),
        format!("{file}: [services.dry-needling-order-select] released: `23 November 2026` is not a date"),
        format!("{file}: references `guideline-summary` released: an unknown needs `unknown` (why) and `supplied_by`"),
        format!("{file}: [services.dry-needling-order-select]: names reference `guideline-sumary`"),
    ] {
        assert!(stdout.contains(&expected), "{expected}\n{stdout}");
    }

    let copy = Copy::new("attributes-keys");
    copy.edit(FILE, |t| {
        t.replace("[intervention]\n", "[intervention]\nsponsor = \"someone\"\n")
    });
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    let file = shown(copy.path(FILE));
    assert!(stdout.contains(&format!("{file}: line ")), "{stdout}");
    assert!(stdout.contains("unknown field `sponsor`"), "{stdout}");

    let copy = Copy::new("attributes-demographics");
    copy.edit(FILE, |t| {
        t.replace("sex = { used = false }", "sex = { used = true }")
            .replace(
                "race = { used = false }",
                "race = { used = false, elements = [\"Patient.extension\"] }",
            )
            .replace("funding = { unknown = \"neither", "funding = { unknwn = \"neither")
    });
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    // A typo in an unknown is a TOML mistake, found first: the file's other checks wait for it.
    assert!(stdout.contains("unknown field `unknwn`"), "{stdout}");
    copy.edit(FILE, |t| t.replace("unknwn", "unknown"));
    let (code, stdout, _) = check(&copy);
    assert_eq!(code, 1);
    let file = shown(copy.path(FILE));
    assert!(
        stdout.contains(&format!(
            "{file}: demographics.sex: a category that is used needs the elements"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}: demographics.race: a category that is not used names no elements"
        )),
        "{stdout}"
    );
}
