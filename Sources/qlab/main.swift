import ArgumentParser
import LabCore
import QMP

await QLab.main()
