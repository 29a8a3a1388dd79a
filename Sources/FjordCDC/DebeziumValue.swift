public import FjordPostgresReplication
import Foundation
import NIOCore

/// A JSON value as Debezium's JSON converter writes it (schemas disabled). Encoded by
/// `DebeziumJSON`: objects keep their keys in column order, as Debezium's do.
public indirect enum DebeziumValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([DebeziumValue])
    case object([(String, DebeziumValue)])

    public static func == (lhs: DebeziumValue, rhs: DebeziumValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.double(let a), .double(let b)): return a == b || (a.isNaN && b.isNaN)
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)): return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// Compact JSON text.
    public var json: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .int(let value): out += String(value)
        case .double(let value):
            if value.isFinite {
                out += value == value.rounded() && abs(value) < 1e15 ? String(format: "%.1f", value) : "\(value)"
            } else {
                out += "\"\(value.isNaN ? "NaN" : value > 0 ? "Infinity" : "-Infinity")\""
            }
        case .string(let value): Self.writeString(value, to: &out)
        case .array(let values):
            out += "["
            for (index, value) in values.enumerated() {
                if index > 0 { out += "," }
                value.write(to: &out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (index, (key, value)) in fields.enumerated() {
                if index > 0 { out += "," }
                Self.writeString(key, to: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    static func writeString(_ text: String, to out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

/// How PostgreSQL values become Debezium's JSON (`io.debezium.connector.postgresql` with the
/// JSON converter, schemas disabled, `time.precision.mode=adaptive`, `binary.handling.mode=bytes`),
/// from pgoutput's text form. The replication connection runs with `DateStyle=ISO`,
/// `TimeZone=UTC` and `IntervalStyle=postgres`, so the text is in one known shape.
public struct DebeziumValueMapper: Sendable {
    /// `decimal.handling.mode`: numeric as a string (Fjord's default: exact, readable without a
    /// schema) or as a double. Debezium's `precise` (base64 of the unscaled bytes) needs the
    /// schema to be read back and is not offered.
    public enum DecimalHandling: String, Sendable {
        case string, double
    }

    public var decimalHandling: DecimalHandling
    /// What an unchanged TOASTed value is written as (Debezium's `unavailable.value.placeholder`).
    public var unavailableValuePlaceholder: String

    public init(decimalHandling: DecimalHandling = .string, unavailableValuePlaceholder: String = "__debezium_unavailable_value") {
        self.decimalHandling = decimalHandling
        self.unavailableValuePlaceholder = unavailableValuePlaceholder
    }

    /// PostgreSQL's built-in type OIDs Fjord maps (pg_type.dat).
    public enum TypeOID {
        public static let bool: UInt32 = 16, bytea: UInt32 = 17, int8: UInt32 = 20, int2: UInt32 = 21, int4: UInt32 = 23
        public static let text: UInt32 = 25, oid: UInt32 = 26, json: UInt32 = 114, float4: UInt32 = 700, float8: UInt32 = 701
        public static let bpchar: UInt32 = 1042, varchar: UInt32 = 1043, date: UInt32 = 1082, time: UInt32 = 1083
        public static let timestamp: UInt32 = 1114, timestamptz: UInt32 = 1184, interval: UInt32 = 1186, timetz: UInt32 = 1266
        public static let numeric: UInt32 = 1700, uuid: UInt32 = 2950, jsonb: UInt32 = 3802
        /// Array type → element type.
        public static let arrays: [UInt32: UInt32] = [
            1000: bool, 1001: bytea, 1005: int2, 1007: int4, 1016: int8, 1009: text, 1015: varchar, 1014: bpchar,
            1021: float4, 1022: float8, 1231: numeric, 2951: uuid, 3807: jsonb, 199: json, 1182: date, 1115: timestamp,
            1185: timestamptz, 1183: time,
        ]
    }

    /// One column's value.
    public func map(_ value: PgColumnValue, typeOID: UInt32, typeModifier: Int32 = -1) -> DebeziumValue {
        switch value {
        case .null: return .null
        case .unchangedToast: return .string(unavailableValuePlaceholder)
        case .binary(let bytes): return .string(Data(bytes.readableBytesView).base64EncodedString())
        case .text(let text): return map(text: text, typeOID: typeOID, typeModifier: typeModifier)
        }
    }

    /// A value in PostgreSQL's text form.
    public func map(text: String, typeOID: UInt32, typeModifier: Int32 = -1) -> DebeziumValue {
        typealias T = TypeOID
        switch typeOID {
        case T.bool: return .bool(text == "t" || text == "true")
        case T.int2, T.int4, T.int8, T.oid: return Int64(text).map(DebeziumValue.int) ?? .string(text)
        case T.float4, T.float8:
            switch text {
            case "NaN": return .double(.nan)
            case "Infinity": return .double(.infinity)
            case "-Infinity": return .double(-.infinity)
            default: return Double(text).map(DebeziumValue.double) ?? .string(text)
            }
        case T.numeric:
            switch decimalHandling {
            case .string: return .string(text)
            case .double: return Double(text).map(DebeziumValue.double) ?? .string(text)
            }
        case T.date:
            return PostgresTime.daysSinceEpoch(text).map { .int(Int64($0)) } ?? .string(text)
        case T.timestamp:
            guard let micros = PostgresTime.microsSinceEpoch(text) else { return .string(text) }
            // adaptive: precision 0–3 → milliseconds (Timestamp), else microseconds (MicroTimestamp).
            return (0...3).contains(typeModifier) ? .int(Self.floorDivide(micros, 1000)) : .int(micros)
        case T.timestamptz:
            return PostgresTime.zonedTimestamp(text).map(DebeziumValue.string) ?? .string(text)
        case T.time:
            guard let micros = PostgresTime.microsOfDay(text) else { return .string(text) }
            return (0...3).contains(typeModifier) ? .int(micros / 1000) : .int(micros)
        case T.timetz:
            return PostgresTime.zonedTime(text).map(DebeziumValue.string) ?? .string(text)
        case T.interval:
            return PostgresTime.intervalMicros(text).map(DebeziumValue.int) ?? .string(text)
        case T.bytea:
            return PostgresText.bytea(text).map { .string(Data($0).base64EncodedString()) } ?? .string(text)
        default:
            if let element = T.arrays[typeOID] {
                guard let elements = PostgresText.arrayElements(text) else { return .string(text) }
                return .array(elements.map { $0.map { map(text: $0, typeOID: element) } ?? .null })
            }
            // text, varchar, char, uuid, json, jsonb (io.debezium.data.Json is the JSON text), and others.
            return .string(text)
        }
    }

    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }
}

/// PostgreSQL's ISO date and time text (DateStyle=ISO, TimeZone=UTC) as Debezium's numbers.
enum PostgresTime {
    /// Days since 1970-01-01 of `YYYY-MM-DD` (with ` BC` for years before 1).
    static func daysSinceEpoch(_ text: String) -> Int? {
        let bc = text.hasSuffix(" BC")
        let core = bc ? String(text.dropLast(3)) : text
        let parts = core.split(separator: "-")
        guard parts.count == 3, var year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]),
            (1...12).contains(month), (1...31).contains(day) else { return nil }
        if bc { year = 1 - year }
        return daysFromCivil(year, month, day)
    }

    /// Howard Hinnant's days-from-civil (proleptic Gregorian).
    static func daysFromCivil(_ y: Int, _ m: Int, _ d: Int) -> Int {
        let year = m <= 2 ? y - 1 : y
        let era = (year >= 0 ? year : year - 399) / 400
        let yoe = year - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// Microseconds of `HH:MM:SS[.ffffff]`.
    static func microsOfDay(_ text: some StringProtocol) -> Int64? {
        let parts = text.split(separator: ":")
        guard parts.count == 3, let hours = Int64(parts[0]), let minutes = Int64(parts[1]) else { return nil }
        let secondParts = parts[2].split(separator: ".", maxSplits: 1)
        guard let seconds = Int64(secondParts[0]) else { return nil }
        var fraction: Int64 = 0
        if secondParts.count == 2 {
            let digits = String(secondParts[1].prefix(6))
            guard let value = Int64(digits) else { return nil }
            fraction = value * Int64(pow(10, Double(6 - digits.count)))
        }
        return ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + fraction
    }

    /// Splits `time[+HH[:MM]]` into the time and its offset in seconds.
    static func splitOffset(_ text: Substring) -> (Substring, Int64)? {
        guard let sign = text.lastIndex(where: { $0 == "+" || $0 == "-" }) else { return (text, 0) }
        let zone = text[text.index(after: sign)...].split(separator: ":")
        guard let hours = Int64(zone[0]) else { return nil }
        let minutes = zone.count > 1 ? Int64(zone[1]) ?? 0 : 0
        let seconds = zone.count > 2 ? Int64(zone[2]) ?? 0 : 0
        let offset = (hours * 3600 + minutes * 60 + seconds) * (text[sign] == "-" ? -1 : 1)
        return (text[..<sign], offset)
    }

    /// Microseconds since the epoch of `YYYY-MM-DD HH:MM:SS[.f][+zz]` (UTC when no offset).
    static func microsSinceEpoch(_ text: String) -> Int64? {
        let pieces = text.split(separator: " ", maxSplits: 1)
        guard pieces.count == 2, let days = daysSinceEpoch(String(pieces[0])),
            let (time, offset) = splitOffset(pieces[1]), let micros = microsOfDay(time) else { return nil }
        return Int64(days) * 86_400_000_000 + micros - offset * 1_000_000
    }

    /// `timestamptz` as Debezium's ZonedTimestamp: ISO-8601 in UTC, `2024-03-01T10:00:00.123456Z`.
    static func zonedTimestamp(_ text: String) -> String? {
        guard let micros = microsSinceEpoch(text) else { return nil }
        let days = DebeziumValueMapper.floorDivide(micros, 86_400_000_000)
        let ofDay = micros - days * 86_400_000_000
        let (y, m, d) = civilFromDays(Int(days))
        return String(format: "%04d-%02d-%02dT", y, m, d) + clock(ofDay) + "Z"
    }

    /// `timetz` as Debezium's ZonedTime: the time in UTC, `10:00:00.5Z`.
    static func zonedTime(_ text: String) -> String? {
        guard let (time, offset) = splitOffset(Substring(text)), let micros = microsOfDay(time) else { return nil }
        let utc = ((micros - offset * 1_000_000) % 86_400_000_000 + 86_400_000_000) % 86_400_000_000
        return clock(utc) + "Z"
    }

    static func clock(_ micros: Int64) -> String {
        let seconds = micros / 1_000_000, fraction = micros % 1_000_000
        var text = String(format: "%02lld:%02lld:%02lld", seconds / 3600, seconds / 60 % 60, seconds % 60)
        if fraction > 0 {
            var digits = String(format: "%06lld", fraction)
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text
    }

    static func civilFromDays(_ z: Int) -> (Int, Int, Int) {
        let shifted = z + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let doe = shifted - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    /// `interval` (IntervalStyle=postgres: `1 year 2 mons 3 days 04:05:06.5`) as Debezium's
    /// MicroDuration: microseconds, a month being 365.25 / 12 days.
    static func intervalMicros(_ text: String) -> Int64? {
        let words = text.split(separator: " ")
        var micros: Double = 0
        var index = 0
        while index < words.count {
            let word = words[index]
            if word.contains(":") {
                let negative = word.hasPrefix("-")
                guard let time = microsOfDay(negative || word.hasPrefix("+") ? word.dropFirst() : word) else { return nil }
                micros += Double(negative ? -time : time)
                index += 1
                continue
            }
            guard index + 1 < words.count, let amount = Double(word) else { return nil }
            let unit = words[index + 1]
            let day = 86_400_000_000.0
            switch unit {
            case "year", "years": micros += amount * 365.25 * day
            case "mon", "mons": micros += amount * 365.25 / 12 * day
            case "day", "days": micros += amount * day
            default: return nil
            }
            index += 2
        }
        return Int64(micros.rounded())
    }
}

/// PostgreSQL's text forms of bytea and arrays.
enum PostgresText {
    /// bytea's hex format `\x48656c6c6f`.
    static func bytea(_ text: String) -> [UInt8]? {
        guard text.hasPrefix("\\x") else { return nil }
        var bytes: [UInt8] = []
        var pending: UInt8? = nil
        for character in text.dropFirst(2) {
            guard let nibble = character.hexDigitValue else { return nil }
            if let high = pending {
                bytes.append(high << 4 | UInt8(nibble))
                pending = nil
            } else {
                pending = UInt8(nibble)
            }
        }
        return pending == nil ? bytes : nil
    }

    /// A one-dimensional array literal `{a,"b c",NULL}` as its elements (nil for NULL).
    static func arrayElements(_ text: String) -> [String?]? {
        guard text.hasPrefix("{"), text.hasSuffix("}") else { return nil }
        let body = Array(text.dropFirst().dropLast())
        if body.isEmpty { return [] }
        var elements: [String?] = []
        var current = ""
        var quoted = false, wasQuoted = false, escaped = false
        for character in body {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" && quoted {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
                wasQuoted = true
            } else if character == "," && !quoted {
                elements.append(!wasQuoted && current == "NULL" ? nil : current)
                current = ""
                wasQuoted = false
            } else if character == "{" && !quoted {
                return nil  // multi-dimensional: kept as text by the caller
            } else {
                current.append(character)
            }
        }
        elements.append(!wasQuoted && current == "NULL" ? nil : current)
        return elements
    }
}
