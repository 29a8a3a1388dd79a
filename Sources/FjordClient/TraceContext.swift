public import FjordProtocol
public import Instrumentation
import NIOCore

/// Trace-context propagation through record headers (swift-distributed-tracing).
///
/// A producer with `ProducerConfiguration.instrument` set injects the task's current
/// `InstrumentationContext` into each record's headers with that instrument; with an
/// OpenTelemetry or W3C instrument these are `traceparent` / `tracestate`, which Java and
/// librdkafka instrumentations read too. A consumer extracts it with
/// `ConsumerRecord.instrumentationContext(using:)` to continue the trace. Off by default: no
/// header is added unless an instrument is configured.
public struct RecordHeadersInjector: Injector {
    public init() {}

    /// Sets `key` (replacing an earlier header of that key).
    public func inject(_ value: String, forKey key: String, into carrier: inout [RecordHeader]) {
        carrier.removeAll { $0.key == key }
        carrier.append(RecordHeader(key: key, value: ByteBuffer(string: value)))
    }
}

/// Reads trace-context values from record headers (the last header of a key wins).
public struct RecordHeadersExtractor: Extractor {
    public init() {}

    public func extract(key: String, from carrier: [RecordHeader]) -> String? {
        guard let value = carrier.last(where: { $0.key == key })?.value else { return nil }
        return String(decoding: value.readableBytesView, as: UTF8.self)
    }
}

extension ConsumerRecord {
    /// The trace context the producer propagated in this record's headers.
    public func instrumentationContext(using instrument: any Instrument = InstrumentationSystem.instrument) -> InstrumentationContext {
        var context = InstrumentationContext.topLevel
        instrument.extract(headers, into: &context, using: RecordHeadersExtractor())
        return context
    }
}

extension ProducerConfiguration {
    /// The headers to send: `headers` plus the current trace context, when an instrument is set.
    func withTraceContext(_ headers: [RecordHeader]) -> [RecordHeader] {
        guard let instrument, let context = InstrumentationContext.current else { return headers }
        var carrier = headers
        instrument.inject(context, into: &carrier, using: RecordHeadersInjector())
        return carrier
    }
}
