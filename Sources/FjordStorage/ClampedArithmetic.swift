extension Int64 {
    /// `self - other`, clamped to Int64's range instead of trapping. For arithmetic on record
    /// timestamps, which clients choose freely (Int64.min and Int64.max included).
    func clampedMinus(_ other: Int64) -> Int64 {
        let (result, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other < 0 ? .max : .min) : result
    }

    /// `self + other`, clamped to Int64's range instead of trapping.
    func clampedPlus(_ other: Int64) -> Int64 {
        let (result, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : result
    }
}
