use std::path::PathBuf;

use automix_verify::*;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/prompts")
}

#[test]
fn the_files_in_configs_load_and_match_the_builtin_set() {
    let loaded = PromptSet::load_dir(&configs()).unwrap();
    assert!(
        loaded
            .source("verify_closed_book")
            .unwrap()
            .ends_with("verify_closed_book.txt")
    );
    let q = QueryText {
        question: "Which planet is largest?",
        context: None,
        options: &[("A".into(), "Mars".into()), ("B".into(), "Jupiter".into())],
    };
    let from_files = loaded.verify_messages(&q, "B");
    assert_eq!(from_files, PromptSet::builtin().verify_messages(&q, "B"));
    let user = &from_files.last().unwrap().content;
    assert!(user.ends_with("Question: Which planet is largest?\nOptions:\nA. Mars\nB. Jupiter\nAI generated answer: B\nVerdict:"), "{user}");
    let mc = loaded.answer_messages(TaskKind::MultipleChoice, &q);
    assert!(mc[1].content.contains("A. Mars\nB. Jupiter"));
}

#[test]
fn context_rows_use_the_grounded_templates() {
    let set = PromptSet::builtin();
    let q = QueryText {
        question: "Who?",
        context: Some("Ada wrote it."),
        options: &[],
    };
    let v = set.verify_messages(&q, "Ada");
    assert!(
        v[1].content
            .contains("Context: Ada wrote it.\nQuestion: Who?\nAI generated answer: Ada")
    );
    let a = set.answer_messages(TaskKind::ShortAnswer, &q);
    assert!(a[1].content.starts_with("Context: Ada wrote it."));
}

#[test]
fn a_broken_file_fails_at_load_naming_file_and_line() {
    let dir = std::env::temp_dir().join(format!("automix-verify-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("answer_short.txt");
    std::fs::write(&file, "[user]\nQuestion: {{question}}\nHint: {{hint}}\n").unwrap();
    let err = PromptSet::load_dir(&dir).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: unknown placeholder {{{{hint}}}}; this template may use {{{{question}}}}",
            file.display()
        )
    );
    std::fs::write(&file, "[user]\nNo question here\n").unwrap();
    let err = PromptSet::load_dir(&dir).unwrap_err();
    assert!(
        err.to_string()
            .contains("must contain the placeholder {{question}}"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
