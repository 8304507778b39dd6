# A catalogue script: tag a Windows machine maintenance-pre-script=example to run it before patching.
$ErrorActionPreference = 'Stop'
Write-Output "host: $env:COMPUTERNAME"
Write-Output "up since: $((Get-CimInstance Win32_OperatingSystem).LastBootUpTime)"
Write-Output "stopped automatic services: $((Get-Service | Where-Object { $_.StartType -eq 'Automatic' -and $_.Status -ne 'Running' }).Count)"
