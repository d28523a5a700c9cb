//! A real SMTP server process for the tests (aiosmtpd, tests/support/smtp_sink.py) and
//! reading what it received.

use std::{path::PathBuf, process::Stdio, time::Duration};

use mail_parser::{Message, MessageParser, MimeHeaders};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::helpers::unused_port;

pub struct SmtpSink {
    pub port: u16,
    folder: TempDir,
    server: Option<Child>,
}

/// A message as the SMTP server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub to: String,
    pub subject: String,
    pub message_id: String,
    pub text: String,
    pub html: String,
    pub content_type: String,
}

impl SmtpSink {
    /// A port for the server, which is not listening yet: mail sent there is refused.
    pub fn reserve() -> Self {
        Self {
            port: unused_port(),
            folder: tempfile::tempdir().expect("temporary directory"),
            server: None,
        }
    }

    pub async fn started() -> Self {
        let mut sink = Self::reserve();
        sink.start().await;
        sink
    }

    pub async fn start(&mut self) {
        let python =
            std::env::var("TOPUPD_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(self.port.to_string())
            .arg(self.folder.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SMTP server (needs Debian's python3-aiosmtpd)");
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::time::timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .expect("SMTP server starts in time")
        .expect("read SMTP server output");
        assert_eq!(ready.as_deref(), Some("ready"), "SMTP server did not start");
        self.server = Some(child);
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        let mut files: Vec<_> = std::fs::read_dir(self.folder.path())
            .expect("read the mail folder")
            .map(|e| e.expect("folder entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| parse(&std::fs::read(path).expect("read message")))
            .collect()
    }

    /// Waits until at least `n` messages arrived, then gives the sender a moment more to
    /// show any extra copy.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.received().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} messages arrived",
                self.received().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.received()
    }
}

pub fn parse(bytes: &[u8]) -> Received {
    let message: Message<'_> = MessageParser::default()
        .parse(bytes)
        .expect("a MIME message");
    let to = message
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("a To address")
        .to_owned();
    let content_type = message
        .content_type()
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()))
        .unwrap_or_default();
    Received {
        to,
        subject: message.subject().unwrap_or_default().to_owned(),
        message_id: message.message_id().unwrap_or_default().to_owned(),
        text: message.body_text(0).unwrap_or_default().into_owned(),
        html: message.body_html(0).unwrap_or_default().into_owned(),
        content_type,
    }
}
