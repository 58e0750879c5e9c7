//! A scripted app for the sidecar tests: answers `GET /dapr/subscribe` with a fixed
//! list, records every other request (method, path, headers, body), and answers each
//! path from a script of (status, body) pairs, the last one repeating.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

type Script = HashMap<String, Vec<(u16, String)>>;

pub struct TestApp {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
}

impl TestApp {
    /// Starts on a free port; `subscribe` is the JSON answered to GET /dapr/subscribe
    /// (`None` answers 404).
    pub fn start(subscribe: Option<serde_json::Value>) -> Self {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"), subscribe)
    }

    pub fn start_on(listener: std::net::TcpListener, subscribe: Option<serde_json::Value>) -> Self {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(HashMap::new()));
        let (rec, scr) = (received.clone(), script.clone());
        let subscribe = subscribe.map(|s| s.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (rec, scr, subscribe) = (rec.clone(), scr.clone(), subscribe.clone());
                std::thread::spawn(move || serve(stream, rec, scr, subscribe));
            }
        });
        Self { port, received, script }
    }

    /// Answers for `path`, in order; the last repeats.
    pub fn script(&self, path: &str, answers: &[(u16, &str)]) {
        self.script.lock().unwrap().insert(path.into(), answers.iter().map(|(s, b)| (*s, b.to_string())).collect());
    }

    pub fn calls(&self, path: &str) -> Vec<Received> {
        self.received.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits until `path` was called at least `n` times.
    pub fn wait_calls(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let c = self.calls(path);
            if c.len() >= n || start.elapsed() > timeout {
                return c;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve(stream: std::net::TcpStream, rec: Arc<Mutex<Vec<Received>>>, scr: Arc<Mutex<Script>>, subscribe: Option<String>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, answer) = if method == "GET" && path == "/dapr/subscribe" {
            match &subscribe {
                Some(s) => (200, s.clone()),
                None => (404, String::new()),
            }
        } else {
            rec.lock().unwrap().push(Received { method: method.clone(), path: path.clone(), headers, body: body.clone() });
            let mut scr = scr.lock().unwrap();
            match scr.get_mut(&path) {
                Some(list) if list.len() > 1 => list.remove(0),
                Some(list) if list.len() == 1 => list[0].clone(),
                _ => (200, String::new()),
            }
        };
        // "sleep:<ms>:<body>" answers late, to exercise timeouts.
        let answer = match answer.strip_prefix("sleep:").and_then(|r| r.split_once(':')) {
            Some((ms, rest)) => {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                rest.to_string()
            }
            None => answer,
        };
        // "@bulk:<STATUS>" answers a bulk delivery with STATUS for every entry sent;
        // "@bulk:data" takes each entry's status from its event's `data.s` (else SUCCESS).
        let answer = match answer.strip_prefix("@bulk:") {
            Some(how) => {
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let entries = req["entries"].as_array().cloned().unwrap_or_default();
                let statuses: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| {
                        let status = match how {
                            "data" => e["event"]["data"]["s"].as_str().unwrap_or("SUCCESS").to_string(),
                            s => s.to_string(),
                        };
                        serde_json::json!({"entryId": e["entryId"], "status": status})
                    })
                    .collect();
                serde_json::json!({ "statuses": statuses }).to_string()
            }
            None => answer,
        };
        let resp = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}", answer.len());
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
