import FjordTesting
import Foundation
import Glibc

/// A real etcd (Debian's etcd-server, installed by tools/test) on free loopback ports, with its
/// data in a temporary directory; `stop` and `start` keep the data, as a restart does.
final class EtcdServer: @unchecked Sendable {
    // @unchecked: `process` is only touched by the test that owns the server, one call at a time.
    let directory: URL
    let clientPort: Int
    let peerPort: Int
    private var process: Process?

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fjord-etcd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        clientPort = try BrokerProcess.freePort()
        peerPort = try BrokerProcess.freePort()
    }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/bin/etcd") ? "/usr/bin/etcd" : "/usr/local/bin/etcd")
        let peer = "http://127.0.0.1:\(peerPort)"
        let client = "http://127.0.0.1:\(clientPort)"
        process.arguments = ["--name", "fjord-test", "--data-dir", directory.appendingPathComponent("data").path,
                             "--listen-client-urls", client, "--advertise-client-urls", client,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", "fjord-test=\(peer)"]
        let logPath = directory.appendingPathComponent("etcd.log").path
        if !FileManager.default.fileExists(atPath: logPath) {
            guard FileManager.default.createFile(atPath: logPath, contents: nil) else { throw POSIXError(.EACCES) }
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try log.seekToEnd()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        // Ready when the client port accepts connections.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if BrokerProcess.accepts(port: clientPort) { return }
            usleep(50_000)
        }
        throw POSIXError(.ETIMEDOUT)
    }

    func stop() {
        guard let process else { return }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
