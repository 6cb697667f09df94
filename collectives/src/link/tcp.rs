//! A byte stream to a peer over a non-blocking TCP socket, for ranks on different hosts.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

const BUF: usize = 1 << 20;

pub struct TcpLink {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl TcpLink {
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            eof: false,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> Result<usize, String> {
        if data.is_empty() {
            return Ok(0);
        }
        match self.stream.write(data) {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Ok(0),
            Err(e) => Err(format!("tcp send: {e}")),
        }
    }

    pub fn peek(&mut self) -> Result<&[u8], String> {
        // Refill when fewer than 64 bytes are left: a partial element needs its rest appended.
        if self.end - self.start < 64 && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(format!("tcp receive: {e}")),
            }
        }
        if self.start == self.end && self.eof {
            return Err("the peer closed the connection".into());
        }
        Ok(&self.buf[self.start..self.end])
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
    }

    pub fn abort(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
