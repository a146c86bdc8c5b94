; Inno Setup 6 script: Vitrine's Windows installer, around the PyInstaller one-folder bundle.
;
;   pyinstaller --noconfirm --clean build.spec            (dist\vitrine\: vitrine.exe, VitrineApp.exe)
;   iscc /DAppVersion=0.1.0 packaging\windows\vitrine.iss
;
; writes dist\vitrine-<version>-windows-x64-setup.exe. It installs the bundle into
; Program Files\Vitrine (or, for a user without admin rights who picks "for me only",
; %LOCALAPPDATA%\Programs\Vitrine), a Start-menu entry (and optionally a desktop one) that starts
; the windowed VitrineApp.exe (folders dropped on it open in the app), and an uninstaller that
; removes the whole folder. vitrine.exe beside it is the command line (vitrine.exe --selftest).
; .github/workflows/installers.yml builds it on windows-latest; docs/PACKAGING.md says how by hand.
; Not run here (Linux): only its references are checked by tests/packaging/test_installers.py.

#ifndef AppVersion
  #error Pass the version: iscc /DAppVersion=X.Y.Z (python -c "import engine; print(engine.__version__)")
#endif
#ifndef BundleDir
  #define BundleDir "..\..\dist\vitrine"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif

[Setup]
AppId={{E5815545-5536-58B2-9D84-E22F2FE39F75}
AppName=Vitrine
AppVersion={#AppVersion}
AppVerName=Vitrine {#AppVersion}
AppPublisher=Vitrine
DefaultDirName={autopf}\Vitrine
DefaultGroupName=Vitrine
DisableProgramGroupPage=yes
PrivilegesRequired=admin
PrivilegesRequiredOverridesAllowed=dialog commandline
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename=vitrine-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\resources\icons\vitrine.ico
UninstallDisplayIcon={app}\VitrineApp.exe
UninstallDisplayName=Vitrine {#AppVersion}
LicenseFile=..\..\LICENSE
Compression=lzma2
SolidCompression=yes
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\Vitrine"; Filename: "{app}\VitrineApp.exe"; Comment: "Product photos to a 3D model"
Name: "{autodesktop}\Vitrine"; Filename: "{app}\VitrineApp.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\VitrineApp.exe"; Description: "{cm:LaunchProgram,Vitrine}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; nothing is written into the app's folder at run time; this also takes what a user put there
Type: filesandordirs; Name: "{app}"
