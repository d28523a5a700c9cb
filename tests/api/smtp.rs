//! A real SMTP server for the tests (mailin-embedded, listening on loopback), and
//! reading what it received. Recipients whose local part starts with "reject-permanent"
//! are refused with 550, "reject-temporary" with 451.

use std::{
    io,
    net::{IpAddr, TcpListener},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use mail_parser::{Message, MessageParser, MimeHeaders};
use mailin_embedded::{Handler, Response, Server, SslConfig, response};
use tempfile::TempDir;

use crate::helpers::unused_port;

pub struct SmtpSink {
    pub port: u16,
    folder: TempDir,
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

/// Stores each accepted message as `NNNNNN.eml` in arrival order.
#[derive(Clone)]
struct Mailbox {
    folder: PathBuf,
    count: Arc<AtomicU64>,
    message: Vec<u8>,
}

impl Handler for Mailbox {
    fn rcpt(&mut self, to: &str) -> Response {
        let local = to
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap_or_default();
        if local.starts_with("reject-permanent") {
            response::NO_MAILBOX
        } else if local.starts_with("reject-temporary") {
            response::INTERNAL_ERROR
        } else {
            response::OK
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.message.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.message.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let number = self.count.fetch_add(1, Ordering::SeqCst);
        let partial = self.folder.join(format!(".{number:06}.partial"));
        let stored = std::fs::write(&partial, &self.message)
            .and_then(|()| std::fs::rename(&partial, self.folder.join(format!("{number:06}.eml"))));
        match stored {
            Ok(()) => response::OK,
            Err(_) => response::INTERNAL_ERROR,
        }
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        response::OK
    }
}

impl SmtpSink {
    /// A port for the server, which is not listening yet: mail sent there is refused.
    pub fn reserve() -> Self {
        Self {
            port: unused_port(),
            folder: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub async fn started() -> Self {
        let mut sink = Self::reserve();
        sink.start().await;
        sink
    }

    /// Starts listening; the server lives as long as the test process.
    pub async fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind the SMTP port");
        let mailbox = Mailbox {
            folder: self.folder.path().to_owned(),
            count: Arc::new(AtomicU64::new(0)),
            message: Vec::new(),
        };
        let mut server = Server::new(mailbox);
        server
            .with_name("smtp.test")
            .with_ssl(SslConfig::None)
            .expect("plain SMTP")
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve().map_err(|e| e.to_string());
        });
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
