//! Device sessions: `device.register` (a session key from the controller's random source,
//! within the scene's cap), `device.locate` and `device.deregister` (only with the device's
//! own key).

use subtle::ConstantTimeEq;

use super::{err, Controller, DeviceRec, PairRec};
use crate::control::protocol::{ControlError, DeviceDeregistered, DeviceLocation, ErrorCode};

impl Controller {
    pub(super) fn device_register(
        &mut self,
        scene: u32,
        name: Option<String>,
        anchor: Option<[f32; 3]>,
    ) -> Result<DeviceLocation, ControlError> {
        let s = self.scene(scene)?;
        if anchor.is_some_and(|a| a.iter().any(|v| !v.is_finite())) {
            return Err(err(ErrorCode::InvalidValue, "anchor: three finite numbers"));
        }
        // Homed on the pair serving its anchor's zone (layer 0); a scene one pair serves
        // whole has nothing to choose.
        let zone = anchor
            .filter(|_| !s.zones.is_empty())
            .map(|a| s.geometry.zone_of(0, a));
        if name.as_ref().is_some_and(|n| n.len() > 128) {
            return Err(err(
                ErrorCode::InvalidValue,
                "name is at most 128 characters",
            ));
        }
        let devices = self.devices.values().filter(|d| d.scene == scene).count();
        if devices >= self.config.max_devices_per_scene {
            return Err(err(
                ErrorCode::SceneFull,
                format!("scene {scene} holds {devices} devices, the most this controller allows"),
            ));
        }
        // Refuse before creating anything if no live pair serves the scene.
        self.serving_pair(scene)?;
        let id = self.meta.next_device;
        self.meta.next_device += 1;
        let key = self.random.session_key().to_hex();
        self.devices.insert(
            id,
            DeviceRec {
                scene,
                key: key.clone(),
                name,
                zone,
            },
        );
        self.bump_scene(scene);
        let mut location = self.location(id)?;
        location.key = Some(key);
        Ok(location)
    }

    pub(super) fn device_deregister(
        &mut self,
        device: u32,
        key: &str,
    ) -> Result<DeviceDeregistered, ControlError> {
        let d = self.device(device)?;
        if !bool::from(d.key.as_bytes().ct_eq(key.trim().as_bytes())) {
            return Err(err(ErrorCode::Unauthorized, "wrong key for this device"));
        }
        let scene = d.scene;
        self.devices.remove(&device);
        self.bump_scene(scene);
        Ok(DeviceDeregistered {
            device,
            epoch: self.meta.epoch,
        })
    }

    /// Where `device` is homed now.
    pub(super) fn location(&self, device: u32) -> Result<DeviceLocation, ControlError> {
        let d = self.device(device)?;
        let scene = d.scene;
        let s = self.scene(scene)?;
        let (pair, rec) = self
            .home_of(d)
            .and_then(|id| self.pairs.get(&id).filter(|p| p.alive).map(|p| (id, p)))
            .ok_or_else(|| no_pair(scene, &s.region))?;
        Ok(DeviceLocation {
            device,
            scene,
            pair,
            udp: rec.udp.to_string(),
            epoch: self.meta.epoch,
            key: None,
        })
    }

    fn serving_pair(&self, scene: u32) -> Result<(u32, &PairRec), ControlError> {
        let s = self.scene(scene)?;
        s.pair
            .and_then(|id| self.pairs.get(&id).filter(|p| p.alive).map(|p| (id, p)))
            .ok_or_else(|| no_pair(scene, &s.region))
    }
}

fn no_pair(scene: u32, region: &str) -> ControlError {
    err(
        ErrorCode::NoPair,
        format!("no live pair in region `{region}` serves scene {scene}"),
    )
}
